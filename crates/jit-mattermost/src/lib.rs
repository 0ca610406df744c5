//! `jit mattermost`: the chat bridge. Mattermost calls it through a custom slash command,
//! interactive buttons and dialogs; it posts through a bot account and talks to the backend only
//! through the signed API. It keeps no database: the approval card's post id lives on the
//! request in the backend, so several bridge replicas can run.
//!
//! Every identity is proven: slash commands by token (constant time, several accepted for
//! rotation), button clicks and dialog submissions by an HMAC the bridge put in the action
//! context or dialog state, callbacks by the X-JIT signature of the callback ring. The actor's
//! email and roles come from the Mattermost API, never from the payload's names.

pub mod bridge;
pub mod cards;
pub mod client;
pub mod commands;
pub mod config;
pub mod journal;
pub mod replies;
pub mod setup;
pub mod slash_tokens;
pub mod tokens;

pub use bridge::Bridge;
pub use config::BridgeConfig;
