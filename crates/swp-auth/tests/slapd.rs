//! The directory client against a real OpenLDAP (slapd) started by the harness: the Active
//! Directory look-alike and a generic LDAP directory, over LDAPS and StartTLS.

use std::sync::Arc;
use std::time::Duration;

use swp_auth::directory::{Directory, DirectoryConfig, PoolOptions};
use swp_auth::login::LoginName;
use swp_auth::{AuthError, Authenticator, SwpAuthConfig};
use ums_proto::swp::v1 as pb;
use ums_testkit::ldap::{
    AD_DOMAIN, AD_NETBIOS, AD_SUFFIX, LDAP_SUFFIX, SERVICE_PASSWORD, Slapd, TestDirectory,
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
