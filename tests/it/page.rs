//! The delivery-log page in a real browser: headless Chromium from Debian's packages, driven
//! through ChromeDriver's WebDriver API over HTTP (with the reqwest client the tests already
//! use). An operator logs in, finds a dead delivery and its error, replays it, and sees the
//! chart. Screenshots land in the target folder for a person to look at.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hookfan::store::{Status, Store};
use serde_json::{Value, json};

use crate::fakes::crm::{FakeCrm, Reply};
use crate::support::{Relay, for_destination, v2_with_id, wait_deliveries};

const TOKEN: &str = "page-admin-token-0123456789";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// ChromeDriver with one headless Chromium session; both end when dropped.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                std::path::Path::new(tool).exists(),
                "{tool} is missing: install Debian's chromium and chromium-driver packages, as .ci/run does"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // A process group of its own, so the Chromium processes the driver starts end with it.
        let driver = Command::new("/usr/bin/chromedriver")
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client.get(format!("{base}/status")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1100",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let created: Value = client
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
            }}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            client,
            _profile: profile,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut request = self.client.request(method, self.url(path));
        if !body.is_null() {
            request = request.json(&body);
        }
        let r: Value = request.send().await.unwrap().json().await.unwrap();
        if r["value"]["error"].is_string() {
            panic!("WebDriver {path}: {}", r["value"]);
        }
        r["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found[ELEMENT].as_str().unwrap().to_string()
    }

    async fn count(&self, css: &str) -> usize {
        self.call(
            reqwest::Method::POST,
            "/elements",
            json!({"using": "css selector", "value": css}),
        )
        .await
        .as_array()
        .map_or(0, Vec::len)
    }

    /// Waits until an element matches `css` (a click's navigation may still be loading).
    async fn wait(&self, css: &str) {
        for _ in 0..200 {
            if self.count(css).await > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no {css} on {}", self.current_url().await);
    }

    /// Waits until the address ends with `tail`.
    async fn wait_url(&self, tail: &str) -> String {
        for _ in 0..200 {
            let url = self.current_url().await;
            if url.ends_with(tail) {
                return url;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("never reached …{tail}: at {}", self.current_url().await);
    }

    async fn text(&self, css: &str) -> String {
        self.wait(css).await;
        let id = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{id}/text"),
            Value::Null,
        )
        .await
        .as_str()
        .unwrap()
        .to_string()
    }

    async fn attribute(&self, css: &str, name: &str) -> String {
        self.wait(css).await;
        let id = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{id}/attribute/{name}"),
            Value::Null,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    async fn click(&self, css: &str) {
        self.wait(css).await;
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        self.wait(css).await;
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// Saves a PNG of the window where a person can look at it.
    async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine as _;
        let png = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("page-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Killing the driver alone would leave its Chromium running: kill the whole group.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logs_in_finds_a_dead_delivery_and_replays_it_from_the_page() {
    let (ok, refuse) = (FakeCrm::start().await, FakeCrm::start().await);
    refuse.set_default(Reply::status(400).body("{\"error\":\"email is invalid\"}"));
    let destination = |name: &str, crm: &FakeCrm| {
        format!(
            "[destinations.{name}]\ntype = \"webhook\"\nurl = \"{}\"\n[destinations.{name}.fields]\nemail = \"{{{{ participant.email }}}}\"\n",
            crm.url("/in")
        )
    };
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n{}",
        crate::support::config(&format!(
            "{}{}",
            destination("ok", &ok),
            destination("refuse", &refuse)
        ))
    );
    let relay = Relay::start(&config).await;
    for id in ["page-1", "page-2", "page-3"] {
        relay.accept(v2_with_id(id)).await;
    }
    let store = relay.store().await;
    let dead = wait_deliveries(
        &store,
        for_destination("refuse"),
        Status::Dead,
        3,
        Duration::from_secs(10),
    )
    .await;
    wait_deliveries(
        &store,
        for_destination("ok"),
        Status::Delivered,
        3,
        Duration::from_secs(10),
    )
    .await;
    let target = dead
        .iter()
        .find(|r| r.participation_id == "page-2")
        .unwrap()
        .id;
    let admin = relay.admin.clone().unwrap();
    let browser = Browser::start().await;

    // Logged out, the log sends the browser to the login form; a wrong token is refused.
    browser.go(&format!("{admin}/")).await;
    browser.wait_url("/login").await;
    browser.type_into("#token", "not-the-token").await;
    browser.click("#login").await;
    assert_eq!(
        browser.text("#login-error").await,
        "That is not the admin token."
    );
    browser.type_into("#token", TOKEN).await;
    browser.click("#login").await;
    browser.wait("#deliveries").await;
    assert_eq!(browser.current_url().await, format!("{admin}/"));

    // The dead delivery's row, coloured as dead, with its error; the chart has its bars.
    let row = format!("#delivery-{target}");
    assert_eq!(browser.attribute(&row, "class").await, "status-dead");
    let text = browser.text(&row).await;
    assert!(text.contains("page-2") && text.contains("refuse"), "{text}");
    assert!(
        text.contains("dead") && text.contains("HTTP 400 Bad Request"),
        "{text}"
    );
    assert_eq!(browser.count("#chart-refuse rect.failed").await, 1);
    assert_eq!(browser.count("#chart-ok rect.delivered").await, 1);
    assert!(
        browser
            .text("#chart-refuse .legend")
            .await
            .contains("3 failed"),
    );
    browser.screenshot("delivery-log.png").await;

    // Filtering by status keeps the dead ones only.
    browser
        .click("select[name=status] option[value=dead]")
        .await;
    browser.click("button.primary").await;
    browser
        .wait_url("status=dead&destination=&since=&participation=")
        .await;
    assert_eq!(browser.count("#deliveries tbody tr").await, 3);
    assert_eq!(browser.count("#deliveries tr.status-delivered").await, 0);

    // The detail: the error in full and the answer; the CRM is fixed, and a replay lands.
    browser.click(&format!("{row} a")).await;
    browser.wait("#attempts").await;
    assert_eq!(browser.text("#last-error").await, "HTTP 400 Bad Request");
    assert!(
        browser
            .text("#attempts")
            .await
            .contains("{\"error\":\"email is invalid\"}")
    );
    refuse.set_default(Reply::status(200));
    browser.click("#replay").await;
    assert_eq!(browser.text("#replayed").await, "Replayed: 1 made due now.");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (row, _) = store.show(target).await.unwrap().unwrap();
        if row.status == Status::Delivered {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{row:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.go(&format!("{admin}/deliveries/{target}")).await;
    assert_eq!(browser.text("#status").await, "delivered");
    assert_eq!(browser.count("#attempts tbody tr").await, 2);
    browser.screenshot("delivery-detail.png").await;
    relay.stop().await;
}

/// An `application/x-www-form-urlencoded` body.
fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_post_from_elsewhere_is_refused() {
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n{}",
        crate::support::config("")
    );
    let relay = Relay::start(&config).await;
    let admin = relay.admin.clone().unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = client
        .post(format!("{admin}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", TOKEN)]))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 303);
    let cookie = login
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(TOKEN),
        "the cookie carries the token itself"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    // The page itself works with the cookie…
    let page = client
        .get(format!("{admin}/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    // …but a post without the form's field, or from another site, is refused.
    for (origin, field) in [
        (None, "forged"),
        (Some("http://evil.example"), csrf.as_str()),
    ] {
        let mut request = client
            .post(format!("{admin}/deliveries/1/replay"))
            .header("cookie", &session)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("csrf", field)]));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        assert_eq!(request.send().await.unwrap().status().as_u16(), 403);
    }
    relay.stop().await;
}
