//! `jit keys …`.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new key (32 random bytes, hex) as JSON: `{"key-YYYYMMDD": "<hex>"}`, ready to
    /// merge into a ring with `jq -s '.[0] * .[1]' ring.json -` or the runbook's step 2.
    Generate {
        /// Id prefix: `key` for the bridge-to-backend ring, `cb` for callbacks.
        #[arg(long, default_value = "key")]
        prefix: String,
        /// Use this id instead of `<prefix>-YYYYMMDD`.
        #[arg(long)]
        id: Option<String>,
        /// Write the richer form with `created_at` (verifiers read both).
        #[arg(long)]
        rich: bool,
    },
}

pub async fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate { prefix, id, rich } => {
            use jit_proto::Clock;
            let now = jit_proto::SystemClock.now();
            let d = now.date();
            let id = id.unwrap_or_else(|| {
                format!(
                    "{prefix}-{:04}{:02}{:02}",
                    d.year(),
                    u8::from(d.month()),
                    d.day()
                )
            });
            let id = jit_proto::keyring::KeyId::parse(&id)?;
            let secret = jit_proto::keyring::Secret::generate()
                .map_err(|e| anyhow::anyhow!("random generator: {e}"))?;
            let entry = jit_proto::keyring::KeyEntry::new(id, secret, rich.then_some(now), None)?;
            let ring = jit_proto::keyring::KeyRing::from_entries(vec![entry])?;
            let text = ring.to_secret_string()?;
            #[allow(clippy::print_stdout)]
            {
                println!("{}", text.as_str());
            }
            Ok(())
        }
    }
}
