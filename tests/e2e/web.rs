//! The web console in a real browser: headless Chromium, driven through `chromedriver`, against
//! a real `ums-server` process, with a device registered over the device API. Every page the
//! test opens is kept as a screenshot under `target/e2e-artifacts/web/`.

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{Server, eventually};
use crate::webdriver::Browser;

/// Where the screenshots go: `target/e2e-artifacts/web/` (or under `CARGO_TARGET_DIR`).
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ums_testkit::workspace_root().join("target"));
    let dir = target.join("e2e-artifacts/web");
    // Only this run's screenshots.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

struct Shots {
    dir: PathBuf,
    n: usize,
}

impl Shots {
    async fn take(&mut self, browser: &Browser, name: &str) {
        self.n += 1;
        let path = self.dir.join(format!("{:02}-{name}.png", self.n));
        browser.screenshot(&path).await;
    }
}

/// Waits until the page's text contains `what`; panics with the page otherwise.
async fn page_shows(browser: &Browser, what: &str) -> String {
    let found = eventually(Duration::from_secs(10), || async {
        let text = browser.text().await;
        text.contains(what).then_some(text)
    })
    .await;
    match found {
        Some(text) => text,
        None => panic!(
            "the page {} does not show `{what}`:\n{}",
            browser.url().await,
            browser.text().await
        ),
    }
}

/// `text` with every run of white space (table cells, lines) as one space.
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The path of the current page (after the host), with its query.
async fn path(browser: &Browser) -> String {
    let url = browser.url().await;
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    rest.find('/')
        .map_or("/".to_owned(), |i| rest[i..].to_owned())
}

/// The done-when walk of the console: a page without a session and a wrong password are
/// refused; the administrator logs in, creates a folder and a profile, edits the profile (a
/// value the parameter catalog refuses is shown as refused), assigns it to the folder, moves
/// the device into the folder, sees the device's effective setting with the profile and folder
/// it came from, and opens the network page and every other page; then logs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_manages_settings_in_the_web_console() {
    let server = Server::start(None);
    let mut device = server.device().await;
    let reg = device
        .register("00:11:22:33:44:77", "kiosk-7")
        .await
        .expect("register");
    let device_id = reg.device_id;
    let first = device.check_in("idle", 0).await.expect("check in");

    let base = server.admin_url.clone();
    let browser = Browser::start().await;
    let mut shots = Shots {
        dir: artifacts(),
        n: 0,
    };

    // Without a session every page leads to the login page.
    browser.goto(&format!("{base}/devices")).await;
    assert_eq!(path(&browser).await, "/login?next=%2Fdevices");
    assert!(browser.title().await.starts_with("Log in"));
    page_shows(&browser, "Log in with an administrator account").await;
    shots.take(&browser, "no-session-login").await;

    // A wrong password is refused with a clear message, and no session starts.
    browser.find("#username").await.send_keys("admin").await;
    browser
        .find("#password")
        .await
        .send_keys("not-the-password")
        .await;
    browser.find("#login").await.click_and_load().await;
    page_shows(&browser, "wrong user name or password").await;
    assert!(path(&browser).await.starts_with("/login"));
    shots.take(&browser, "wrong-password").await;
    browser.goto(&format!("{base}/network")).await;
    assert!(
        path(&browser).await.starts_with("/login"),
        "still no session after a wrong password"
    );

    // The right password leads to the page first asked for.
    browser.goto(&format!("{base}/devices")).await;
    browser.find("#username").await.send_keys("admin").await;
    browser
        .find("#password")
        .await
        .send_keys(&server.admin_password())
        .await;
    browser.find("#login").await.click_and_load().await;
    assert_eq!(path(&browser).await, "/devices");
    page_shows(&browser, "kiosk-7").await;
    assert_eq!(
        browser.script("return document.cookie").await,
        "",
        "the session cookie is HttpOnly: no script of the page can read it"
    );
    shots.take(&browser, "devices").await;

    // Searching by name or unit id.
    browser
        .find("#search")
        .await
        .send_keys("nothing-like-it")
        .await;
    browser.find("#search-go").await.click_and_load().await;
    let list = browser.find("#devices").await.text().await;
    assert!(!list.contains("kiosk-7"), "{list}");
    browser.goto(&format!("{base}/devices?q=KIOSK")).await;
    let list = browser.find("#devices").await.text().await;
    assert!(list.contains("kiosk-7"), "search ignores case: {list}");

    // A folder.
    browser.goto(&format!("{base}/folders")).await;
    browser.find("#folder-name").await.send_keys("Berlin").await;
    browser.find("#create-folder").await.click_and_load().await;
    assert_eq!(path(&browser).await, "/folders");
    page_shows(&browser, "Berlin").await;
    shots.take(&browser, "folders").await;

    // A profile, created with one parameter.
    browser.goto(&format!("{base}/profiles")).await;
    browser
        .find("#profile-name")
        .await
        .send_keys("kiosk-screens")
        .await;
    browser
        .find("#profile-params")
        .await
        .send_keys("display.monitors=3")
        .await;
    browser.find("#create-profile").await.click_and_load().await;
    let profile_path = path(&browser).await;
    assert!(
        profile_path.starts_with("/profiles/"),
        "a new profile shows its page: {profile_path}"
    );
    page_shows(&browser, "Profile kiosk-screens").await;
    shots.take(&browser, "profile-created").await;

    // Editing: the catalog refuses a value out of range, and the profile keeps its value.
    browser
        .find("#param-key")
        .await
        .send_keys("display.monitors")
        .await;
    browser.find("#param-value").await.send_keys("99").await;
    browser.find("#set-param").await.click_and_load().await;
    let text = page_shows(&browser, "Refused (invalid argument)").await;
    assert!(text.contains("display.monitors"), "{text}");
    let kept = browser
        .script("return document.getElementById('param-value').value")
        .await;
    assert_eq!(kept, "99", "the refused value stays in the form to correct");
    shots.take(&browser, "profile-value-refused").await;
    browser.goto(&format!("{base}{profile_path}")).await;
    let params = words(&browser.find("#params").await.text().await);
    assert!(params.contains("display.monitors 3"), "{params}");

    // A valid edit.
    browser
        .find("#param-key")
        .await
        .send_keys("display.resolution")
        .await;
    browser
        .find("#param-value")
        .await
        .send_keys("1920x1080")
        .await;
    browser.find("#set-param").await.click_and_load().await;
    assert_eq!(path(&browser).await, profile_path);
    let params = words(&browser.find("#params").await.text().await);
    assert!(params.contains("display.resolution 1920x1080"), "{params}");

    // Assigned to the folder.
    browser
        .find("#assign-folder option:nth-child(2)")
        .await
        .click()
        .await;
    browser.find("#assign").await.click_and_load().await;
    assert_eq!(path(&browser).await, profile_path);
    let assigned = words(&browser.find("#assignments").await.text().await);
    assert!(assigned.contains("folder Berlin"), "{assigned}");
    shots.take(&browser, "profile-assigned").await;

    // The device moves into the folder, and its effective settings name their origin.
    browser.goto(&format!("{base}/devices")).await;
    browser
        .find(&format!("a[href=\"/devices/{device_id}\"]"))
        .await
        .click_and_load()
        .await;
    assert_eq!(path(&browser).await, format!("/devices/{device_id}"));
    page_shows(&browser, "No parameter is set for this device").await;
    browser
        .find("#move-folder option:nth-child(2)")
        .await
        .click()
        .await;
    browser.find("#move").await.click_and_load().await;
    assert_eq!(path(&browser).await, format!("/devices/{device_id}"));
    let folder = browser.find("#device-folder").await.text().await;
    assert_eq!(folder, "Berlin");
    let explained = browser.find("#explained").await.text().await;
    for (key, value) in [
        ("display.monitors", "3"),
        ("display.resolution", "1920x1080"),
    ] {
        let row = explained
            .lines()
            .map(words)
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in the explain view:\n{explained}"));
        assert!(
            row.starts_with(&format!("{key} {value} "))
                && row.ends_with("kiosk-screens folder Berlin"),
            "{key} is {value} from profile kiosk-screens on folder Berlin: {row}"
        );
    }
    shots.take(&browser, "device-explain").await;

    // Explaining for a Shared Workplace user needs a directory: without one the explain
    // section says so, and the rest of the device page still shows.
    browser
        .goto(&format!("{base}/devices/{device_id}?user=alice"))
        .await;
    let text = page_shows(&browser, "Effective settings").await;
    assert!(text.contains("Refused ("), "{text}");
    assert!(text.contains("Device kiosk-7"), "{text}");
    shots.take(&browser, "device-explain-user-refused").await;

    // The device gets what the explain view shows at its next check-in.
    let next = device
        .check_in("idle", first.settings_revision)
        .await
        .expect("check in");
    assert!(
        next.settings_changed,
        "the move changed the device's settings"
    );
    let settings = device.get_settings().await.expect("settings");
    assert!(
        settings
            .settings
            .iter()
            .any(|p| p.key == "display.monitors" && p.value == "3"),
        "{settings:?}"
    );

    // The network page: this server, running, and the network check's report.
    browser.goto(&format!("{base}/network")).await;
    let processes = browser.find("#processes").await.text().await;
    let own = server.process_id();
    let line = processes
        .lines()
        .find(|l| l.starts_with(&own))
        .unwrap_or_else(|| panic!("server {own} not listed:\n{processes}"));
    assert!(
        line.contains("server") && line.contains("running"),
        "{line}"
    );
    let summary = browser.find("#check-summary").await.text().await;
    assert!(summary.contains("Checked by"), "{summary}");
    page_shows(&browser, "Update status").await;
    shots.take(&browser, "network").await;

    // The other pages.
    for (page, shows) in [
        ("/jobs", "New job"),
        ("/files", "Files"),
        ("/swp", "Sessions"),
        ("/profiles", "kiosk-screens"),
        ("/audit?action=CreateProfile", "kiosk-screens"),
    ] {
        browser.goto(&format!("{base}{page}")).await;
        assert_eq!(path(&browser).await, page);
        page_shows(&browser, shows).await;
        let name = page.trim_start_matches('/');
        shots
            .take(&browser, name.split('?').next().unwrap_or(name))
            .await;
    }

    // An assigned profile is deleted only with force: the refusal says where it is assigned.
    browser.goto(&format!("{base}{profile_path}")).await;
    browser.find("#delete-profile").await.click_and_load().await;
    let text = page_shows(&browser, "unassign it first").await;
    assert!(text.contains("Berlin"), "{text}");
    shots.take(&browser, "profile-delete-refused").await;

    // Renaming the device.
    browser.goto(&format!("{base}/devices/{device_id}")).await;
    browser.find("#device-name").await.send_keys("-lobby").await;
    browser.find("#rename").await.click_and_load().await;
    page_shows(&browser, "Device kiosk-7-lobby").await;

    // Logging out ends the session.
    browser.find("header button").await.click_and_load().await;
    assert!(path(&browser).await.starts_with("/login"));
    browser.goto(&format!("{base}/network")).await;
    assert!(
        path(&browser).await.starts_with("/login"),
        "no page after logging out"
    );
    let count = std::fs::read_dir(&shots.dir)
        .expect("artifacts")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "png"))
        })
        .count();
    assert!(
        count >= shots.n,
        "{count} screenshots in {}",
        shots.dir.display()
    );
}

/// An HTTP/1.1 exchange over TLS with the server's admin port: status, headers (names
/// lower-case) and body.
async fn https(server: &Server, request: &str) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    ums_tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    let pem = String::from_utf8_lossy(&server.ca_pem()).into_owned();
    for cert in ums_tls::parse_certs(&pem).expect("ca") {
        roots.add(cert).expect("root");
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.admin_addr())
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("tls handshake");
    tls.write_all(request.as_bytes()).await.expect("request");
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an http answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn request(method: &str, path: &str, cookies: &str, form: &str) -> String {
    let cookie = if cookies.is_empty() {
        String::new()
    } else {
        format!("cookie: {cookies}\r\n")
    };
    format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{cookie}content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{form}",
        form.len()
    )
}

/// `name=value` of a `set-cookie` header named `name`.
fn set_cookie<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    header(headers, "set-cookie")
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no cookie {name} in {headers:?}"))
}

/// The value of the first hidden `csrf` field of a page.
fn csrf_of(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..].split('"').next().unwrap_or_default().to_owned()
}

/// What the browser does not show: the console's headers (CSP without inline script, strict
/// cookies) and its refusals over plain HTTP: a page without a session is a redirect to the
/// login page, a form whose CSRF token is missing or wrong is refused and changes nothing, a
/// wrong password is a 401 with its message.
#[tokio::test]
async fn the_console_refuses_requests_without_a_session_or_csrf_token() {
    let server = Server::start(None);

    for path in ["/", "/network", "/devices/1", "/profiles"] {
        let (status, headers, _) = https(&server, &request("GET", path, "", "")).await;
        assert_eq!(status, 303, "GET {path} without a session");
        let to = header(&headers, "location");
        assert!(to[0].starts_with("/login"), "GET {path} leads to {to:?}");
    }
    let (status, _, _) = https(&server, &request("POST", "/folders", "", "name=x&csrf=")).await;
    assert_eq!(
        status, 303,
        "a form without a session goes to the login page"
    );

    let (status, headers, body) = https(&server, &request("GET", "/login", "", "")).await;
    assert_eq!(status, 200);
    let csp = header(&headers, "content-security-policy");
    assert!(csp[0].contains("default-src 'self'"), "{csp:?}");
    assert!(
        !body.contains("<script") && !body.contains("style="),
        "no inline script or style"
    );
    let login_cookie = set_cookie(&headers, "__Host-ums_login");
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(login_cookie.contains(flag), "{login_cookie}");
    }
    let login_cookie = login_cookie
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    let token = csrf_of(&body);
    assert!(login_cookie.ends_with(&format!("={token}")));

    // The login form with another token.
    let form = format!("username=admin&password=x&csrf={token}x");
    let (status, _, body) = https(&server, &request("POST", "/login", &login_cookie, &form)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("security token"), "{body}");

    let form = format!("username=admin&password=wrong-password&csrf={token}");
    let (status, headers, body) =
        https(&server, &request("POST", "/login", &login_cookie, &form)).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("wrong user name or password"), "{body}");
    assert!(header(&headers, "set-cookie").is_empty(), "no session");

    let password = server.admin_password();
    let form = format!(
        "username=admin&password={}&next=%2Ffolders&csrf={token}",
        form_encode(&password)
    );
    let (status, headers, _) =
        https(&server, &request("POST", "/login", &login_cookie, &form)).await;
    assert_eq!(status, 303);
    assert_eq!(header(&headers, "location"), ["/folders"]);
    let session = set_cookie(&headers, "__Host-ums_session");
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(flag), "{session}");
    }
    let session = session.split(';').next().unwrap_or_default().to_owned();

    let (status, _, body) = https(&server, &request("GET", "/folders", &session, "")).await;
    assert_eq!(status, 200);
    let csrf = csrf_of(&body);
    assert_ne!(csrf, token, "the session has its own token");

    // A form of another site: the session cookie, no token or the login form's.
    for bad in ["", "&csrf=", &format!("&csrf={token}")] {
        let form = format!("name=Forged{bad}");
        let (status, _, body) = https(&server, &request("POST", "/folders", &session, &form)).await;
        assert_eq!(status, 403, "{form}: {body}");
    }
    let (_, _, body) = https(&server, &request("GET", "/folders", &session, "")).await;
    assert!(!body.contains("Forged"), "a refused form changes nothing");

    let form = format!("name=Hamburg&parent=&csrf={csrf}");
    let (status, headers, _) = https(&server, &request("POST", "/folders", &session, &form)).await;
    assert_eq!(status, 303);
    assert_eq!(header(&headers, "location"), ["/folders"]);
    let (_, _, body) = https(&server, &request("GET", "/folders", &session, "")).await;
    assert!(body.contains("Hamburg"), "{body}");

    // A value the handler refuses is shown with its message, not a panic or a blank page.
    let form = format!("name=&parent=abc&csrf={csrf}");
    let (status, _, body) = https(&server, &request("POST", "/folders", &session, &form)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("parent folder must be a positive number"),
        "{body}"
    );

    let (status, headers, _) = https(&server, &request("GET", "/style.css", "", "")).await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type")[0].starts_with("text/css"));

    // The console's change is in the audit log under the administrator's name, as the API's.
    let ctl = server.umsctl();
    let audit = ctl.json(&["audit", "--action", "CreateFolder"]);
    let entries = audit["entries"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["admin"], "admin", "{audit}");

    // The API's permissions: an administrator who may only read sees the pages and is refused
    // a change, with the permission named.
    ctl.with_env(
        &[
            "admins",
            "create",
            "viewer",
            "--permission",
            "settings:read",
            "--permission",
            "devices:read",
        ],
        &[("UMS_NEW_PASSWORD", "viewer-password-1")],
    );
    let (session, csrf) = web_login(&server, "viewer", "viewer-password-1").await;
    let (status, _, body) = https(&server, &request("GET", "/folders", &session, "")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hamburg"), "{body}");
    let form = format!("name=Munich&parent=&csrf={csrf}");
    let (status, _, body) = https(&server, &request("POST", "/folders", &session, &form)).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("lacks the permission `settings:write`"),
        "{body}"
    );
    let (status, _, body) = https(&server, &request("GET", "/network", &session, "")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("network:read"), "{body}");

    // Logging out ends the session on the server: the cookie is refused afterwards.
    let (status, _, _) = https(
        &server,
        &request("POST", "/logout", &session, &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(status, 303);
    let (status, headers, _) = https(&server, &request("GET", "/folders", &session, "")).await;
    assert_eq!(status, 303);
    assert!(header(&headers, "location")[0].starts_with("/login"));
}

/// Logs in through the login form: the session cookie (`name=value`) and the session's CSRF
/// token.
async fn web_login(server: &Server, user: &str, password: &str) -> (String, String) {
    let (_, headers, body) = https(server, &request("GET", "/login", "", "")).await;
    let login_cookie = set_cookie(&headers, "__Host-ums_login")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    let form = format!(
        "username={user}&password={}&csrf={}",
        form_encode(password),
        csrf_of(&body)
    );
    let (status, headers, body) =
        https(server, &request("POST", "/login", &login_cookie, &form)).await;
    assert_eq!(status, 303, "{body}");
    let session = set_cookie(&headers, "__Host-ums_session")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    let (_, _, body) = https(server, &request("GET", "/folders", &session, "")).await;
    (session, csrf_of(&body))
}

/// Percent-encodes a form value.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
