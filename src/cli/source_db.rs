//! The source-database flags shared by `outbound reconcile` and `outbound
//! loadgen`. Defaults reach the local stack as its application user.

use clap::Args;
use outbound::source_db::SourceDb;
use secrecy::SecretString;

#[derive(Args)]
pub struct SourceDbArgs {
    /// Host of the MySQL/MariaDB server holding the orders, warehouse and logistics databases
    #[arg(long, env = "OUTBOUND_DB_HOST", default_value = "127.0.0.1")]
    pub db_host: String,
    /// Its port
    #[arg(long, env = "OUTBOUND_DB_PORT", default_value_t = 3306)]
    pub db_port: u16,
    /// The user to log in as (reconcile needs SELECT; loadgen INSERT, UPDATE, DELETE)
    #[arg(long, env = "OUTBOUND_DB_USER", default_value = "outbound_app")]
    pub db_user: String,
    /// Its password; prefer the environment variable to the flag [default: the local stack's]
    #[arg(
        long,
        env = "OUTBOUND_DB_PASSWORD",
        hide_env_values = true,
        hide_default_value = true,
        default_value = "outbound"
    )]
    pub db_password: String,
}

impl std::fmt::Debug for SourceDbArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceDbArgs")
            .field("db_host", &self.db_host)
            .field("db_port", &self.db_port)
            .field("db_user", &self.db_user)
            .field("db_password", &"[redacted]")
            .finish()
    }
}

impl SourceDbArgs {
    pub fn source_db(&self) -> SourceDb {
        SourceDb {
            host: self.db_host.clone(),
            port: self.db_port,
            user: self.db_user.clone(),
            password: SecretString::from(self.db_password.clone()),
        }
    }
}
