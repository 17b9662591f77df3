//! `cargo xtask test`: set up what the tests need, then run every test: nextest, a short
//! `cargo xtask chaos` run, then the deployment tests of `cargo xtask deploy-test`.

use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};
use clap::Args;

use crate::util::{self, step};

/// Arguments of `cargo xtask test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Extra arguments for `cargo nextest run`, after `--`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "NEXTEST_ARGS"
    )]
    nextest_args: Vec<String>,
}

/// Runs `cargo xtask test`.
pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    ensure_postgres()?;
    ensure_slapd()?;
    ensure_samba()?;
    ensure_chromium()?;
    ensure_nextest()?;

    step!("starting postgresql for the test run");
    let pg = ums_testkit::Postgres::start()?;
    let url = pg.url();
    step!(
        "postgresql listening on 127.0.0.1:{} ({}={url})",
        pg.port(),
        ums_testkit::TEST_PG_URL_ENV
    );

    // End-to-end tests run the real binaries.
    util::run(
        util::cargo()
            .args(["build", "--workspace", "--bins"])
            .env(ums_testkit::TEST_PG_URL_ENV, &url),
    )?;

    let status = util::status(
        util::cargo()
            .args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .args(&args.nextest_args)
            .env(ums_testkit::TEST_PG_URL_ENV, &url),
    )?;

    step!("stopping postgresql");
    drop(pg);

    // A short chaos run: faults under device load on a local HA network, then the audit. The
    // binaries are the ones built above.
    step!(
        "chaos run (cargo xtask chaos --duration {})",
        crate::chaos::TEST_DURATION_S
    );
    let chaos_ok = match crate::chaos::passes(crate::chaos::ChaosArgs::for_test()) {
        Ok(passed) => passed,
        Err(e) => {
            eprintln!("xtask: chaos run failed: {e:#}");
            false
        }
    };

    // The container deployments: images from the release binaries, the compose ha stack with
    // devices, the Kubernetes manifests. Run whatever nextest said, so every failure shows.
    step!("deployment tests (cargo xtask deploy-test)");
    let deploy = crate::deploy::run(crate::deploy::DeployTestArgs {
        no_build: false,
        devices: 1000,
        only: None,
    });
    if let Err(e) = &deploy {
        eprintln!("xtask: deployment tests failed: {e:#}");
    }
    match (status.success(), chaos_ok, deploy.is_ok()) {
        (true, true, true) => step!("all tests passed"),
        (false, _, _) => step!("tests failed ({status})"),
        (true, false, _) => step!("tests passed, the chaos run failed (target/chaos/report.json)"),
        (true, true, false) => step!("tests passed, deployment tests failed"),
    }
    if !status.success() {
        return Ok(util::exit_code(status));
    }
    if !chaos_ok {
        return Ok(ExitCode::FAILURE);
    }
    deploy
}

/// Makes sure the PostgreSQL server binaries are installed.
pub(crate) fn ensure_postgres() -> anyhow::Result<()> {
    if let Some(dir) = ums_testkit::pg_bin_dir() {
        step!("postgresql binaries found in {}", dir.display());
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "postgresql binaries (initdb, pg_ctl, postgres) not found; install the `postgresql` package (e.g. `sudo apt-get install postgresql`) or point {} at their directory",
            ums_testkit::PG_BIN_DIR_ENV
        );
    }
    step!("postgresql binaries not found; installing the `postgresql` package with apt-get");
    util::apt_install(&["postgresql"])?;
    let dir = ums_testkit::pg_bin_dir()
        .context("postgresql was installed but initdb is still not found")?;
    step!("postgresql binaries installed in {}", dir.display());
    Ok(())
}

/// Makes sure OpenLDAP's `slapd` (with `slapadd` and its modules) is installed: the Shared
/// Workplace tests log users in against a real directory the harness starts.
fn ensure_slapd() -> anyhow::Result<()> {
    if let Some(path) = ums_testkit::ldap::slapd_path() {
        step!("slapd found at {}", path.display());
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "slapd not found; install the `slapd` package (e.g. `sudo apt-get install slapd ldap-utils`)"
        );
    }
    step!("slapd not found; installing the `slapd` package with apt-get");
    // The package's own server is not wanted: the tests start theirs. Preseeding keeps the
    // installer from asking for a domain and an admin password.
    let preseed = "slapd slapd/no_configuration boolean true\n";
    util::run(
        Command::new("sh")
            .arg("-c")
            .arg(format!("printf '{preseed}' | debconf-set-selections")),
    )?;
    util::apt_install(&["slapd", "ldap-utils"])?;
    let path =
        ums_testkit::ldap::slapd_path().context("slapd was installed but is still not found")?;
    step!("slapd installed at {}", path.display());
    Ok(())
}

/// Makes sure Samba's Active Directory domain controller is installed: a Shared Workplace test
/// logs users in against a real Active Directory the harness provisions and starts on a
/// loopback address (which needs root, as Samba binds the LDAP ports below 1024).
fn ensure_samba() -> anyhow::Result<()> {
    if let Some((samba, _)) = ums_testkit::samba::samba_path() {
        step!("samba found at {}", samba.display());
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "samba not found; install the Samba AD DC (e.g. `sudo apt-get install samba samba-ad-dc samba-ad-provision`)"
        );
    }
    step!(
        "samba not found; installing the `samba`, `samba-ad-dc` and `samba-ad-provision` packages with apt-get"
    );
    util::apt_install(&["samba", "samba-ad-dc", "samba-ad-provision"])?;
    let (samba, _) =
        ums_testkit::samba::samba_path().context("samba was installed but is still not found")?;
    step!("samba installed at {}", samba.display());
    Ok(())
}

/// Makes sure headless Chromium and its WebDriver server are installed: the end-to-end test of
/// the network check renders its HTML report with the browser, the web console's test drives
/// it through `chromedriver`.
fn ensure_chromium() -> anyhow::Result<()> {
    if let (Some(path), Some(driver)) = (
        ums_testkit::chromium_path(),
        ums_testkit::chromedriver_path(),
    ) {
        step!(
            "chromium found at {}, chromedriver at {}",
            path.display(),
            driver.display()
        );
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "chromium or chromedriver not found; install the `chromium` and `chromium-driver` packages (e.g. `sudo apt-get install chromium chromium-driver`)"
        );
    }
    step!(
        "chromium or chromedriver not found; installing `chromium` and `chromium-driver` with apt-get"
    );
    util::apt_install(&["chromium", "chromium-driver"])?;
    let path =
        ums_testkit::chromium_path().context("chromium was installed but is still not found")?;
    let driver = ums_testkit::chromedriver_path()
        .context("chromium-driver was installed but chromedriver is still not found")?;
    step!(
        "chromium installed at {}, chromedriver at {}",
        path.display(),
        driver.display()
    );
    Ok(())
}

/// Makes sure `cargo nextest` is available.
fn ensure_nextest() -> anyhow::Result<()> {
    let found = util::cargo()
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if found {
        step!("cargo-nextest found");
        return Ok(());
    }
    step!("cargo-nextest not found; installing it");
    util::run(util::cargo().args(["install", "cargo-nextest", "--locked"]))
}
