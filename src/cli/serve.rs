//! `cloudlake serve` (the REST API and dashboard) and `cloudlake api-key`.

use std::sync::Arc;

use clap::Args;
use cloudlake::api::auth::{Scope, hash_key, new_key};
use cloudlake::api::{AppState, Backend};
use cloudlake::lake::Lake;
use cloudlake::serving::cassandra::Cassandra;

use super::GlobalArgs;

/// Options of `cloudlake serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: [api] listen, else 127.0.0.1:8080]
    #[arg(long, env = "CLOUDLAKE_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
}

pub async fn run(global: &GlobalArgs, args: &ServeArgs) -> anyhow::Result<()> {
    let settings = global.settings()?;
    let backend = match &settings.cassandra {
        Some(config) => Backend::Cassandra(Box::new(Cassandra::connect(config).await?)),
        None => Backend::Lake(Lake::new(&settings.lake)?),
    };
    let state = Arc::new(AppState::new(backend, &settings.api)?);
    let listen = args.listen.clone().unwrap_or_else(|| settings.api.listen.clone());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "cloudlake: serving on http://{addr}/ (dashboard), API under /api/v1, OpenAPI at /openapi.json"
    );
    cloudlake::api::serve(state, listener).await?;
    Ok(())
}

/// Options of `cloudlake api-key`.
#[derive(Debug, Args)]
pub struct ApiKeyArgs {
    /// Who will hold the key (shown instead of the key)
    #[arg(long, default_value = "dashboard")]
    name: String,
    /// What the key may do: read = query endpoints only; admin = also /metrics and refresh
    #[arg(long, value_enum, default_value_t = Scope::Read)]
    scope: Scope,
}

pub fn api_key(args: &ApiKeyArgs) -> anyhow::Result<()> {
    if args.name.is_empty() || args.name.contains('"') || args.name.contains('\n') {
        anyhow::bail!("--name must be non-empty, without quotes or newlines");
    }
    let key = new_key();
    let scope = match args.scope {
        Scope::Read => "read",
        Scope::Admin => "admin",
    };
    println!("API key (shown once; give it to the client, do not store it in the config):\n  {key}\n");
    println!("Add this to the config file (only the hash is kept):\n");
    println!("[[api.keys]]\nname = \"{}\"\nsha256 = \"{}\"\nscope = \"{scope}\"", args.name, hash_key(&key));
    Ok(())
}
