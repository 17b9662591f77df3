//! The directory client against a real OpenLDAP (slapd) started by the harness: the Active
//! Directory look-alike and a generic LDAP directory, over LDAPS and StartTLS.

use std::sync::Arc;
use std::time::Duration;

use swp_auth::directory::{Directory, DirectoryConfig, PoolOptions};
use swp_auth::login::LoginName;
use swp_auth::{AuthError, Authenticator, SwpAuthConfig};
use ums_proto::swp::v1 as pb;
use ums_testkit::ldap::{
    AD_DOMAIN, AD_NETBIOS, AD_SUFFIX, HARDENED_BIND_CN, LDAP_SUFFIX, SERVICE_PASSWORD, Slapd,
    TestDirectory,
};

fn options() -> PoolOptions {
    PoolOptions {
        connections: 4,
        connect_timeout: Duration::from_secs(2),
        op_timeout: Duration::from_secs(5),
        group_ttl: Duration::from_secs(60),
    }
}

fn ad_config(slapd: &Slapd) -> pb::Directory {
    pb::Directory {
        id: 1,
        revision: 1,
        name: "corp".into(),
        kind: "ad".into(),
        domain: AD_DOMAIN.into(),
        netbios: AD_NETBIOS.into(),
        urls: vec![slapd.ldaps_url()],
        base_dn: AD_SUFFIX.into(),
        bind_dn: format!("cn=svc-ums,ou=Service,{AD_SUFFIX}"),
        bind_password: SERVICE_PASSWORD.into(),
        ca_pem: slapd.ca_pem().into(),
        page_size: 100,
        ..Default::default()
    }
}

fn ldap_config(slapd: &Slapd, membership: &str) -> pb::Directory {
    pb::Directory {
        id: 2,
        revision: 1,
        name: "openldap".into(),
        kind: "ldap".into(),
        domain: "example.org".into(),
        urls: vec![slapd.ldap_url()],
        starttls: true,
        base_dn: LDAP_SUFFIX.into(),
        bind_dn: format!("cn=svc-ums,ou=Service,{LDAP_SUFFIX}"),
        bind_password: SERVICE_PASSWORD.into(),
        ca_pem: slapd.ca_pem().into(),
        page_size: 2,
        group_membership: membership.into(),
        user_filter: "(objectClass=inetOrgPerson)".into(),
        ..Default::default()
    }
}

fn directory(cfg: &pb::Directory) -> Directory {
    Directory::new(DirectoryConfig::from_proto(cfg).expect("config"), options()).expect("dir")
}

fn name(s: &str) -> LoginName {
    LoginName::parse(s).expect("name")
}

fn groups(u: &ums_domain::DirectoryUser) -> Vec<(String, u32)> {
    u.groups.iter().map(|g| (g.name.clone(), g.level)).collect()
}

#[tokio::test]
async fn active_directory_logins_resolve_groups_primary_group_and_ous() {
    ums_tls::install_crypto_provider();
    let slapd = Slapd::start(&TestDirectory::sample()).expect("slapd");
    let ad = directory(&ad_config(&slapd));

    for spelling in ["alice", "ALICE", "alice@ad.example.org", "AD\\alice"] {
        let u = ad
            .authenticate(&name(spelling), "alice-pw-1")
            .await
            .unwrap_or_else(|e| panic!("{spelling}: {e}\n{}", slapd.log_tail(20)));
        assert_eq!(u.login, "alice");
        assert_eq!(u.display_name, "Alice Smith");
        assert_eq!(
            u.dn,
            format!("cn=Alice Smith,ou=Sales,ou=Berlin,{AD_SUFFIX}")
        );
        let p = u.primary_group.as_ref().expect("primary group");
        assert_eq!(p.name, "Domain Users");
        // sales (direct) -> staff -> everyone, and the primary group on level 1.
        assert_eq!(
            groups(&u),
            [
                ("Domain Users".to_owned(), 1),
                ("sales".to_owned(), 1),
                ("staff".to_owned(), 2),
                ("everyone".to_owned(), 3)
            ]
        );
        let ous: Vec<&str> = u.ous.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(ous, ["Sales", "Berlin"]);
        assert_eq!(u.ous[1].dn, format!("ou=Berlin,{AD_SUFFIX}"));
    }

    // The primary group's own nesting counts too.
    let carol = ad
        .authenticate(&name("carol"), "carol-pw-1")
        .await
        .expect("carol");
    assert_eq!(
        carol.primary_group.as_ref().map(|g| g.name.as_str()),
        Some("Contractors")
    );
    assert_eq!(
        groups(&carol),
        [("Contractors".to_owned(), 1), ("everyone".to_owned(), 2)]
    );

    // A name with characters that mean something in filters logs in as itself.
    let ohara = ad
        .authenticate(&name("o'hara (ext)"), "o'hara (ext)-pw-1")
        .await
        .expect("o'hara");
    assert_eq!(ohara.login, "o'hara (ext)");

    // Lookup without a password, for settings explain.
    let bob = ad.lookup(&name("bob")).await.expect("lookup");
    assert_eq!(bob.ous.len(), 1);
    assert!(matches!(
        ad.lookup(&name("nobody")).await,
        Err(AuthError::NotFound(_))
    ));
}

#[tokio::test]
async fn refusals_are_clear_and_injections_match_nobody() {
    ums_tls::install_crypto_provider();
    let slapd = Slapd::start(&TestDirectory::sample()).expect("slapd");
    let ad = directory(&ad_config(&slapd));

    let wrong = ad.authenticate(&name("alice"), "bob-pw-1").await;
    assert!(
        matches!(wrong, Err(AuthError::WrongCredentials)),
        "{wrong:?}"
    );
    let unknown = ad.authenticate(&name("mallory"), "x").await;
    assert!(
        matches!(unknown, Err(AuthError::WrongCredentials)),
        "{unknown:?}"
    );
    assert_eq!(
        unknown.expect_err("unknown").to_string(),
        "wrong user name or password"
    );
    // Filter injections: each matches no entry (or only its literal name) and so is refused,
    // even with a password that is right for somebody.
    for attempt in [
        "*",
        "a*",
        "alice)(sAMAccountName=*",
        "*)(|(objectClass=*)",
        "alice)(|(userPassword=*)",
        "\\2a",
    ] {
        let r = ad.authenticate(&name(attempt), "alice-pw-1").await;
        assert!(
            matches!(r, Err(AuthError::WrongCredentials)),
            "{attempt}: {r:?}"
        );
        assert!(
            matches!(ad.lookup(&name(attempt)).await, Err(AuthError::NotFound(_))),
            "{attempt}"
        );
    }
}

#[tokio::test]
async fn generic_ldap_over_starttls_with_memberof_and_with_group_search() {
    ums_tls::install_crypto_provider();
    let slapd = Slapd::start(&TestDirectory::sample()).expect("slapd");
    for membership in ["memberof", "member"] {
        let ldap = directory(&ldap_config(&slapd, membership));
        let u = ldap
            .authenticate(&name("alice"), "alice-pw-1")
            .await
            .unwrap_or_else(|e| panic!("{membership}: {e}\n{}", slapd.log_tail(20)));
        assert_eq!(u.login, "alice");
        assert!(u.primary_group.is_none());
        assert_eq!(
            groups(&u),
            [
                ("sales".to_owned(), 1),
                ("staff".to_owned(), 2),
                ("everyone".to_owned(), 3)
            ],
            "{membership}"
        );
        let bob = ldap
            .authenticate(&name("bob"), "bob-pw-1")
            .await
            .expect("bob");
        // bob is in it and staff directly; staff counts at its closest level.
        assert_eq!(
            groups(&bob),
            [
                ("it".to_owned(), 1),
                ("staff".to_owned(), 1),
                ("everyone".to_owned(), 2)
            ],
            "{membership}"
        );
        assert!(matches!(
            ldap.authenticate(&name("bob"), "alice-pw-1").await,
            Err(AuthError::WrongCredentials)
        ));
    }
}

#[tokio::test]
async fn controllers_fail_over_and_a_dead_directory_is_reported() {
    ums_tls::install_crypto_provider();
    let mut slapd = Slapd::start(&TestDirectory::sample()).expect("slapd");
    // The first controller does not answer: the second one serves.
    let dead = format!("ldaps://127.0.0.1:{}", ums_testkit::free_port());
    let mut cfg = ad_config(&slapd);
    cfg.urls = vec![dead.clone(), slapd.ldaps_url()];
    let ad = directory(&cfg);
    ad.authenticate(&name("alice"), "alice-pw-1")
        .await
        .expect("failover");

    // The directory goes down: pooled connections fail, reconnecting fails, the error says so.
    slapd.stop();
    let err = ad
        .authenticate(&name("alice"), "alice-pw-1")
        .await
        .expect_err("down");
    assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("directory `corp` is unreachable"), "{text}");
    assert!(text.contains(&dead), "{text}");

    // It comes back: the next login reconnects.
    slapd.restart().expect("restart");
    ad.authenticate(&name("alice"), "alice-pw-1")
        .await
        .expect("back");
}

#[tokio::test]
async fn wrong_bind_account_and_untrusted_certificate_are_configuration_errors() {
    ums_tls::install_crypto_provider();
    let slapd = Slapd::start(&TestDirectory::sample()).expect("slapd");
    let mut cfg = ad_config(&slapd);
    cfg.bind_password = "wrong".into();
    let err = directory(&cfg)
        .authenticate(&name("alice"), "alice-pw-1")
        .await
        .expect_err("bad bind account");
    assert!(matches!(err, AuthError::Config(_)), "{err:?}");
    assert!(
        err.to_string().contains("refused the bind account"),
        "{err}"
    );

    // A CA that did not sign slapd's certificate: the TLS handshake fails, no password is sent.
    let mut cfg = ad_config(&slapd);
    cfg.ca_pem = ums_tls::CertAuthority::generate("other")
        .expect("ca")
        .cert_pem;
    let err = directory(&cfg)
        .authenticate(&name("alice"), "alice-pw-1")
        .await
        .expect_err("untrusted");
    assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn empty_password_and_rate_limits_are_refused_before_the_directory() {
    ums_tls::install_crypto_provider();
    let slapd = Slapd::start(&TestDirectory::sample()).expect("slapd");
    let mut cfg = SwpAuthConfig::default();
    cfg.limits.user_burst = 3;
    cfg.limits.user_per_minute = 1;
    let auth: Arc<Authenticator> = Authenticator::new(&cfg.validate().expect("valid"));
    let req = |user: &str, password: &str, device_id| pb::AuthenticateRequest {
        directory: Some(ad_config(&slapd)),
        username: user.into(),
        password: password.into(),
        device_id,
    };
    let err = auth
        .authenticate(&req("alice", "", 1))
        .await
        .expect_err("empty");
    assert!(matches!(err, AuthError::Invalid(_)), "{err:?}");
    assert_eq!(err.to_string(), "password is empty");

    auth.authenticate(&req("alice", "alice-pw-1", 1))
        .await
        .expect("first");
    // A wrong password costs two attempts: 1 + 2 = 3, the burst is used up.
    assert!(matches!(
        auth.authenticate(&req("alice", "nope", 2)).await,
        Err(AuthError::WrongCredentials)
    ));
    let err = auth
        .authenticate(&req("alice", "alice-pw-1", 3))
        .await
        .expect_err("limited");
    assert!(matches!(err, AuthError::RateLimited(_)), "{err:?}");
    assert!(err.to_string().contains("user `alice`"), "{err}");
    // Another user is not affected.
    auth.authenticate(&req("bob", "bob-pw-1", 3))
        .await
        .expect("bob");
}

#[tokio::test]
async fn only_servers_may_call_over_mutual_tls() {
    use ums_proto::swp::v1::swp_auth_service_client::SwpAuthServiceClient;
    use ums_tls::{CertAuthority, ComponentKind};

    ums_tls::install_crypto_provider();
    let slapd = Slapd::start(&TestDirectory::sample()).expect("slapd");
    let ca = CertAuthority::generate("network CA").expect("ca");
    let names = vec!["127.0.0.1".to_owned()];
    let own = ca
        .issue_node(ComponentKind::SwpAuth, "swp-auth-1", &names)
        .expect("swp-auth identity");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let cfg = SwpAuthConfig::default().validate().expect("valid");
    let served = tokio::spawn(async move {
        swp_auth::run(
            &cfg,
            own,
            swp_auth::Listeners {
                internal: listener,
                metrics: None,
            },
            async move {
                let _ = stopped.await;
            },
        )
        .await
    });

    let req = || pb::AuthenticateRequest {
        directory: Some(ad_config(&slapd)),
        username: "alice".into(),
        password: "alice-pw-1".into(),
        device_id: 1,
    };
    let server = ca
        .issue_node(ComponentKind::Server, "server-1", &names)
        .expect("server identity");
    let mut client =
        SwpAuthServiceClient::new(ums_network::internal_channel(&server, &addr).expect("channel"));
    let user = client
        .authenticate(req())
        .await
        .expect("server may call")
        .into_inner();
    assert_eq!(user.login, "alice");
    assert_eq!(
        user.primary_group.map(|g| g.name).as_deref(),
        Some("Domain Users")
    );
    let wrong = client
        .authenticate(pb::AuthenticateRequest {
            password: "nope".into(),
            ..req()
        })
        .await
        .expect_err("wrong password");
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    assert_eq!(wrong.message(), "wrong user name or password");

    let broker = ca
        .issue_node(ComponentKind::Broker, "broker-1", &names)
        .expect("broker identity");
    let mut client =
        SwpAuthServiceClient::new(ums_network::internal_channel(&broker, &addr).expect("channel"));
    let refused = client
        .authenticate(req())
        .await
        .expect_err("broker refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // A certificate of another CA does not get through the handshake.
    let stranger = CertAuthority::generate("other CA")
        .expect("ca")
        .issue_node(ComponentKind::Server, "server-x", &names)
        .expect("identity");
    let mut client = SwpAuthServiceClient::new(
        ums_network::internal_channel(&stranger, &addr).expect("channel"),
    );
    assert!(client.authenticate(req()).await.is_err());

    let _ = stop.send(());
    served.await.expect("join").expect("run");
}

/// What the service logs while a test runs, as plain text.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    /// Captures this thread's logs (the test's runtime is single-threaded) until the guard
    /// drops.
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// The lines at `level` that contain every one of `words`.
    fn lines(&self, level: &str, words: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(level) && words.iter().all(|w| l.contains(w)))
            .map(str::to_owned)
            .collect()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn groups_outside_a_base_dn_narrowed_to_the_users_ou_are_resolved() {
    ums_tls::install_crypto_provider();
    // Active Directory's default layout: the groups in CN=Users, the users in OUs.
    let slapd = Slapd::start(&TestDirectory::in_users_container()).expect("slapd");
    let users = format!("cn=Users,{AD_SUFFIX}");

    let mut berlin = ad_config(&slapd);
    berlin.base_dn = format!("ou=Berlin,{AD_SUFFIX}");
    let ad = directory(&berlin);
    let alice = ad
        .authenticate(&name("alice"), "alice-pw-1")
        .await
        .unwrap_or_else(|e| panic!("alice: {e}\n{}", slapd.log_tail(20)));
    let primary = alice.primary_group.as_ref().expect("primary group");
    assert_eq!(primary.name, "Domain Users");
    assert_eq!(primary.dn, format!("cn=Domain Users,{users}"));
    assert_eq!(
        groups(&alice),
        [
            ("Domain Users".to_owned(), 1),
            ("sales".to_owned(), 1),
            ("staff".to_owned(), 2),
            ("everyone".to_owned(), 3)
        ]
    );
    assert!(alice.groups.iter().all(|g| g.dn.ends_with(&users)));

    // The primary group's own nesting, from another OU.
    let mut munich = ad_config(&slapd);
    munich.base_dn = format!("ou=Munich,{AD_SUFFIX}");
    let ad = directory(&munich);
    let carol = ad
        .authenticate(&name("carol"), "carol-pw-1")
        .await
        .expect("carol");
    assert_eq!(
        groups(&carol),
        [("Contractors".to_owned(), 1), ("everyone".to_owned(), 2)]
    );
    // Users are still only found under the base DN.
    assert!(matches!(
        ad.authenticate(&name("alice"), "alice-pw-1").await,
        Err(AuthError::WrongCredentials)
    ));

    // A generic directory that lists members in the groups: the group search leaves the base
    // DN too.
    let mut ldap = ldap_config(&slapd, "member");
    ldap.base_dn = format!("ou=Berlin,{LDAP_SUFFIX}");
    let alice = directory(&ldap)
        .authenticate(&name("alice"), "alice-pw-1")
        .await
        .expect("alice in ldap");
    assert_eq!(
        groups(&alice),
        [
            ("sales".to_owned(), 1),
            ("staff".to_owned(), 2),
            ("everyone".to_owned(), 3)
        ]
    );
}

#[tokio::test]
async fn a_bind_account_that_cannot_read_the_sid_logs_a_warning_and_keeps_the_other_groups() {
    ums_tls::install_crypto_provider();
    let slapd = Slapd::start(&TestDirectory::sample()).expect("slapd");
    let mut cfg = ad_config(&slapd);
    cfg.bind_dn = format!("cn={HARDENED_BIND_CN},ou=Service,{AD_SUFFIX}");
    let ad = directory(&cfg);

    let logs = Logs::default();
    let _capture = logs.capture();
    let alice = ad
        .authenticate(&name("alice"), "alice-pw-1")
        .await
        .unwrap_or_else(|e| panic!("alice: {e}\n{}", slapd.log_tail(20)));
    assert!(alice.primary_group.is_none());
    assert_eq!(
        groups(&alice),
        [
            ("sales".to_owned(), 1),
            ("staff".to_owned(), 2),
            ("everyone".to_owned(), 3)
        ]
    );
    let warned = logs.lines(
        "WARN",
        &[
            "alice",
            "primaryGroupID and objectSid cannot be read",
            "primary group",
        ],
    );
    assert_eq!(warned.len(), 1, "{}", logs.text());

    // The account that may read them: no warning.
    let full = directory(&ad_config(&slapd));
    let before = logs.lines("WARN", &[]).len();
    let alice = full
        .authenticate(&name("alice"), "alice-pw-1")
        .await
        .expect("alice");
    assert!(alice.primary_group.is_some());
    assert_eq!(logs.lines("WARN", &[]).len(), before, "{}", logs.text());
}

#[tokio::test]
async fn refusals_for_account_state_are_logged_and_read_like_a_wrong_password() {
    ums_tls::install_crypto_provider();
    let mut data = TestDirectory::sample();
    let template = data.users[0].clone();
    let user = |login: &str, rid: u32, extra: &[(&str, &str)]| ums_testkit::ldap::TestUser {
        login: login.into(),
        display_name: format!("{login} Test"),
        password: format!("{login}-pw-1"),
        extra: extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        rid,
        ..template.clone()
    };
    data.users.extend([
        user("dave", 1301, &[("userAccountControl", "514")]),
        user(
            "erin",
            1302,
            &[
                ("userAccountControl", "512"),
                ("msDS-User-Account-Control-Computed", "16"),
            ],
        ),
        // Expired on 1601-01-01 plus a moment.
        user("frank", 1303, &[("accountExpires", "1")]),
        // A normal account that never expires.
        user(
            "grace",
            1304,
            &[
                ("userAccountControl", "512"),
                ("accountExpires", "9223372036854775807"),
            ],
        ),
    ]);
    let slapd = Slapd::start(&data).expect("slapd");
    let ad = directory(&ad_config(&slapd));
    let logs = Logs::default();
    let _capture = logs.capture();

    let wrong: tonic::Status = ad
        .authenticate(&name("alice"), "not-her-password")
        .await
        .expect_err("wrong password")
        .into();
    for (login, state) in [
        ("dave", "disabled"),
        ("erin", "locked"),
        ("frank", "expired"),
    ] {
        for password in [format!("{login}-pw-1"), "not-the-password".to_owned()] {
            let err = ad
                .authenticate(&name(login), &password)
                .await
                .expect_err(login);
            assert!(
                matches!(&err, AuthError::Refused(s) if s == state),
                "{login}: {err:?}"
            );
            // What the device gets is what a wrong password gets.
            let status: tonic::Status = err.into();
            assert_eq!(status.code(), wrong.code(), "{login}");
            assert_eq!(status.message(), wrong.message(), "{login}");
            assert!(!status.message().contains(state), "{login}");
        }
        let logged = logs.lines(
            "WARN",
            &[
                &format!("user={login}"),
                &format!("login refused: the account is {state}"),
            ],
        );
        assert_eq!(logged.len(), 2, "{login}:\n{}", logs.text());
    }
    let grace = ad
        .authenticate(&name("grace"), "grace-pw-1")
        .await
        .expect("grace");
    assert_eq!(grace.login, "grace");
}

/// A real Active Directory: a Samba AD DC with the groups in `CN=Users` (AD's default), the
/// users in OUs and the directory's base DN narrowed to one OU.
#[tokio::test]
async fn a_samba_active_directory_keeps_groups_outside_the_users_ou() {
    use ums_testkit::samba::{SAMBA_ADMIN_PASSWORD, SAMBA_DOMAIN, SAMBA_SUFFIX, SambaDc};

    ums_tls::install_crypto_provider();
    let mut data = TestDirectory::in_users_container();
    // AD does not take parentheses in a sAMAccountName.
    data.users.retain(|u| u.login != "o'hara (ext)");
    let mut dave = data.users[1].clone();
    dave.login = "dave".into();
    dave.display_name = "Dave Miller".into();
    dave.password = "dave-pw-1".into();
    dave.extra = vec![("userAccountControl".into(), "514".into())];
    data.users.push(dave);
    let dc = SambaDc::start("127.0.0.23", &data).expect("samba");
    let config = |base: &str| pb::Directory {
        id: 3,
        revision: 1,
        name: "samba".into(),
        kind: "ad".into(),
        domain: SAMBA_DOMAIN.into(),
        netbios: AD_NETBIOS.into(),
        urls: vec![dc.ldaps_url()],
        base_dn: format!("{base}{SAMBA_SUFFIX}"),
        bind_dn: dc.admin_dn(),
        bind_password: SAMBA_ADMIN_PASSWORD.into(),
        ca_pem: dc.ca_pem().into(),
        page_size: 100,
        ..Default::default()
    };
    let users = format!("CN=Users,{SAMBA_SUFFIX}");

    let ad = directory(&config("OU=Berlin,"));
    let upn = format!("alice@{SAMBA_DOMAIN}");
    for spelling in ["alice", "AD\\alice", upn.as_str()] {
        let alice = ad
            .authenticate(&name(spelling), "alice-pw-1")
            .await
            .unwrap_or_else(|e| panic!("{spelling}: {e}\n{}", dc.log_tail(30)));
        assert_eq!(alice.login, "alice");
        assert_eq!(
            alice.dn,
            format!("CN=Alice Smith,OU=Sales,OU=Berlin,{SAMBA_SUFFIX}")
        );
        let primary = alice.primary_group.as_ref().expect("primary group");
        assert_eq!(primary.name, "Domain Users");
        assert!(
            primary
                .dn
                .eq_ignore_ascii_case(&format!("CN=Domain Users,{users}")),
            "{primary:?}"
        );
        let found = groups(&alice);
        for expected in [
            ("Domain Users", 1),
            ("sales", 1),
            ("staff", 2),
            ("everyone", 3),
        ] {
            assert!(
                found.contains(&(expected.0.to_owned(), expected.1)),
                "{expected:?} missing from {found:?}"
            );
        }
        let ous: Vec<&str> = alice.ous.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(ous, ["Sales", "Berlin"]);
    }
    // A NetBIOS domain that is not this directory's finds nobody, as an unknown user.
    for typed in ["OTHER\\alice", "nobody"] {
        let r = ad.authenticate(&name(typed), "alice-pw-1").await;
        assert!(
            matches!(r, Err(AuthError::WrongCredentials)),
            "{typed}: {r:?}"
        );
    }
    let wrong = ad
        .authenticate(&name("alice"), "bob-pw-1")
        .await
        .expect_err("wrong password");
    assert!(matches!(wrong, AuthError::WrongCredentials), "{wrong:?}");
    // A disabled account: refused, and the device reads what a wrong password gives.
    let disabled = ad
        .authenticate(&name("dave"), "dave-pw-1")
        .await
        .expect_err("disabled");
    assert!(
        matches!(&disabled, AuthError::Refused(s) if s == "disabled"),
        "{disabled:?}"
    );
    assert_eq!(disabled.to_string(), wrong.to_string());

    // Carol's primary group is her own (Contractors, nested in everyone), from another OU.
    let ad = directory(&config("OU=Munich,"));
    let carol = ad
        .authenticate(&name("carol"), "carol-pw-1")
        .await
        .unwrap_or_else(|e| panic!("carol: {e}\n{}", dc.log_tail(30)));
    assert_eq!(
        carol.primary_group.as_ref().map(|g| g.name.as_str()),
        Some("Contractors")
    );
    let found = groups(&carol);
    assert!(found.contains(&("Contractors".to_owned(), 1)), "{found:?}");
    assert!(found.contains(&("everyone".to_owned(), 2)), "{found:?}");
    assert!(!found.iter().any(|(g, _)| g == "Domain Users"), "{found:?}");
    // Users are only found under the base DN.
    assert!(matches!(
        ad.authenticate(&name("alice"), "alice-pw-1").await,
        Err(AuthError::WrongCredentials)
    ));
}
