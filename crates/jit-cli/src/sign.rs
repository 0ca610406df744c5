//! `jit sign`: the headers of a signed request, or a ready `curl` command, so a break-glass call
//! needs no hand-made HMAC.

use clap::Args;
use jit_keys::SourceSpec;
use jit_proto::keyring::KeyRing;
use jit_proto::sign::{
    Audience, RequestParts, SignInput, SignatureVersion, canonical_string, new_nonce, sign,
};
use jit_proto::{Clock, SystemClock};

#[derive(Debug, Args)]
pub struct SignArgs {
    /// Key source: `file:PATH`, `env:VAR`, `aws-sm:ID` or a Secrets Manager ARN.
    #[arg(long, env = "JIT_CLIENT_KEYS")]
    pub keys: String,
    /// Sign with this key id instead of the ring's signing key.
    #[arg(long)]
    pub key_id: Option<String>,
    /// HTTP method.
    #[arg(long, short = 'X', default_value = "GET")]
    pub method: String,
    /// Path and query, e.g. `/requests?status=PENDING`.
    #[arg(long)]
    pub path: String,
    /// Body text (sign exactly these bytes).
    #[arg(long, short = 'd', conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Read the body from a file.
    #[arg(long)]
    pub body_file: Option<std::path::PathBuf>,
    /// Use the existing system's v1 scheme (no query, no audience).
    #[arg(long)]
    pub v1: bool,
    /// Audience for v2: `backend` (calls to the API) or `bridge` (callbacks).
    #[arg(long, default_value = "backend")]
    pub audience: String,
    /// Print a curl command against this base URL instead of the headers.
    #[arg(long)]
    pub curl: Option<String>,
    /// Also print the canonical string (to debug a peer's implementation).
    #[arg(long)]
    pub show_canonical: bool,
    /// AWS region for `aws-sm:` sources.
    #[arg(long, env = "JIT_AWS_REGION")]
    pub aws_region: Option<String>,
    /// AWS endpoint override for `aws-sm:` sources.
    #[arg(long, env = "JIT_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
}

/// Loads a ring once from a source specification.
pub async fn load_ring(
    spec: &str,
    region: Option<String>,
    endpoint: Option<String>,
) -> anyhow::Result<KeyRing> {
    let spec = SourceSpec::parse(spec).map_err(anyhow::Error::msg)?;
    let source = jit_keys::open_source(&spec, region, endpoint).await;
    Ok(source.load().await?)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[allow(clippy::print_stdout)]
pub async fn run(a: SignArgs) -> anyhow::Result<()> {
    let ring = load_ring(&a.keys, a.aws_region.clone(), a.aws_endpoint_url.clone()).await?;
    let clock = SystemClock;
    let key = match &a.key_id {
        Some(id) => ring
            .get(id)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("key {id:?} is not in the ring"))?,
        None => ring
            .signing_key(clock.now())
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no key in the ring may sign now"))?,
    };
    let body = match (&a.body, &a.body_file) {
        (Some(b), _) => b.clone().into_bytes(),
        (None, Some(f)) => std::fs::read(f)?,
        (None, None) => Vec::new(),
    };
    let audience = match a.audience.as_str() {
        "backend" => Audience::Backend,
        "bridge" => Audience::Bridge,
        other => anyhow::bail!("audience must be backend or bridge, got {other:?}"),
    };
    let version = if a.v1 {
        SignatureVersion::V1
    } else {
        SignatureVersion::V2
    };
    let method = a.method.to_ascii_uppercase();
    let nonce = new_nonce().map_err(|e| anyhow::anyhow!("random generator: {e}"))?;
    let req = RequestParts {
        method: &method,
        path_and_query: &a.path,
        body: &body,
    };
    let input = SignInput {
        version,
        audience,
        request: req,
        timestamp: clock.unix(),
        nonce: &nonce,
    };
    let headers = sign(&key, &input);
    if a.show_canonical {
        eprintln!(
            "canonical string:\n{}\n",
            canonical_string(
                version,
                audience,
                &input.timestamp.to_string(),
                &nonce,
                &req
            )
        );
    }
    match &a.curl {
        None => {
            for (k, v) in headers {
                println!("{k}: {v}");
            }
        }
        Some(base) => {
            let mut cmd = format!(
                "curl -sS -X {method} {}",
                shell_quote(&format!("{}{}", base.trim_end_matches('/'), a.path))
            );
            for (k, v) in headers {
                cmd.push_str(&format!(" -H {}", shell_quote(&format!("{k}: {v}"))));
            }
            if !body.is_empty() {
                cmd.push_str(" -H 'Content-Type: application/json'");
                cmd.push_str(&format!(
                    " --data-binary {}",
                    shell_quote(&String::from_utf8_lossy(&body))
                ));
            }
            println!("{cmd}");
        }
    }
    Ok(())
}
