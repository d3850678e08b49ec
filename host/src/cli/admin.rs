//! The admin commands that read or change the store: `keys`, `credit`, `usage`, `ledger verify`.

use yolo_edge_ledger::{Period, Store, rfc3339};

use super::{KeysCommand, UsageArgs, UsageFormat};
use crate::config::Config;
use crate::report;

pub(super) async fn keys(db: &dyn Store, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create { tenant, credit } => {
            let key = db.create_key(&tenant, credit).await?;
            let balance = db.balance(&tenant).await?.unwrap_or(0);
            println!("created key {} for tenant {tenant} (balance {balance} tokens); it is shown only once:", key.id);
            println!("{}", key.key);
        }
        KeysCommand::List { tenant } => {
            println!("{:<18} {:<20} {:<22} state", "key id", "tenant", "created");
            for k in db.list_keys(tenant.as_deref()).await? {
                let state = k.revoked_us.map_or("active".to_owned(), |t| format!("revoked {}", rfc3339(t)));
                println!("{:<18} {:<20} {:<22} {state}", k.id, k.tenant, rfc3339(k.created_us));
            }
        }
        KeysCommand::Revoke { key_id } => {
            db.revoke_key(&key_id).await?;
            println!("revoked key {key_id}");
        }
    }
    Ok(())
}

pub(super) async fn usage(db: &dyn Store, config: &Config, args: UsageArgs) -> anyhow::Result<()> {
    let period = Period::parse(args.from.as_deref(), args.to.as_deref()).map_err(anyhow::Error::msg)?;
    if db.balance(&args.tenant).await?.is_none() {
        anyhow::bail!("no tenant {:?}", args.tenant);
    }
    match args.format {
        UsageFormat::Table => {
            let report = db.usage(&args.tenant, period).await?;
            print!("{}", report::table(&report, |t| format!("{} {}", config.tokens.format(t), config.tokens.currency)));
        }
        UsageFormat::Csv => print!("{}", report::csv(&db.usage(&args.tenant, period).await?)),
        UsageFormat::Json => println!("{}", serde_json::to_string_pretty(&db.usage(&args.tenant, period).await?)?),
        UsageFormat::Cloudevents => {
            for row in db.invocations(&args.tenant, period.from_us, period.to_us).await? {
                println!("{}", report::cloudevent(&row));
            }
        }
    }
    Ok(())
}

pub(super) async fn verify(db: &dyn Store) -> anyhow::Result<()> {
    let report = db.verify().await?;
    match report.problem {
        None => {
            println!("ledger ok: {} rows, chain intact, balances consistent; head {}", report.rows, report.head);
            Ok(())
        }
        Some(problem) => anyhow::bail!("ledger verification failed: {problem}"),
    }
}
