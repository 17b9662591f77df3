//! The resolved settings of one invocation: the config file, the server and its CA (flags over
//! the stored values), and a client that sends the stored session token.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cli::Cli;
use crate::client::{self, Admin};
use crate::config::{self, Config};

/// The resolved settings of one invocation.
pub struct Context {
    pub json: bool,
    pub config_path: PathBuf,
    pub config: Config,
    server: Option<String>,
    ca: Option<PathBuf>,
}

impl Context {
    pub fn new(cli: &Cli) -> anyhow::Result<Self> {
        let config_path = match &cli.config {
            Some(path) => path.clone(),
            None => config::default_path()?,
        };
        let config = Config::load(&config_path)?;
        let server = cli.server.clone().or_else(|| config.server.clone());
        let ca = cli
            .ca
            .clone()
            .or_else(|| config.ca.as_ref().map(PathBuf::from));
        Ok(Self {
            json: cli.json,
            config_path,
            config,
            server,
            ca,
        })
    }

    pub fn server_and_ca(&self) -> anyhow::Result<(&str, &Path)> {
        let server = self
            .server
            .as_deref()
            .context("no server: pass --server (or UMS_SERVER) or run `umsctl init`")?;
        let ca = self
            .ca
            .as_deref()
            .context("no ca file: pass --ca (or UMS_CA) or run `umsctl init`")?;
        Ok((server, ca))
    }

    /// A client sending the stored session token.
    pub async fn admin(&self) -> anyhow::Result<Admin> {
        let (server, ca) = self.server_and_ca()?;
        let token = self
            .config
            .token
            .as_deref()
            .context("not logged in: run `umsctl init` or `umsctl login`")?;
        client::connect(server, ca, Some(token)).await
    }
}
