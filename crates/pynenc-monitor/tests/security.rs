//! The monitor's security, each rule with a test, over a real socket:
//! authentication, roles, CSRF and origin, methods, headers, caps,
//! redaction, binding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use base64::Engine;
use pynenc_monitor::{Monitor, MonitorError, MonitorOptions, REDACTED};
use support::*;

const HEADERS: &[(&str, &str)] = &[
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

fn assert_security_headers(r: &Resp, what: &str) {
    for (k, v) in HEADERS {
        assert_eq!(r.header(k), Some(*v), "{what}: header {k}");
    }
    let csp = r
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"));
    assert!(csp.contains("default-src 'self'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: {csp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_is_required_and_checked() {
    let f = Fixture::start(Kind::Memory).await;
    let a = f.addr;
    // no credentials
    let r = Req::get("/api/overview").send(a).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    // a browser is sent to the login form
    let r = Req::get("/").header("Accept", "text/html").send(a).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/login"));
    // wrong token, wrong basic password, a right password for the wrong user
    assert_eq!(
        Req::get("/api/overview")
            .bearer("operator-secret-2")
            .send(a)
            .await
            .status,
        401
    );
    let basic = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let r = Req::get("/api/overview")
        .header("Authorization", &basic("ops", "nope"))
        .send(a)
        .await;
    assert_eq!(r.status, 401);
    let r = Req::get("/api/overview")
        .header("Authorization", &basic("viewer", OPERATOR))
        .send(a)
        .await;
    assert_eq!(r.status, 401);
    // every other route is closed too
    for path in [
        "/metrics",
        "/events",
        "/api/invocations",
        "/api/config",
        "/invocations",
    ] {
        assert_eq!(Req::get(path).send(a).await.status, 401, "{path}");
    }
    // right ones
    assert_eq!(
        Req::get("/api/overview")
            .bearer(OPERATOR)
            .send(a)
            .await
            .status,
        200
    );
    let r = Req::get("/api/overview")
        .header("Authorization", &basic("viewer", VIEWER))
        .send(a)
        .await;
    assert_eq!(r.status, 200);
    // health and assets need nothing, and say nothing of the data
    let r = Req::get("/health").send(a).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    assert_eq!(Req::get("/assets/htmx.min.js").send(a).await.status, 200);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_form_sets_a_strict_http_only_cookie() {
    let f = Fixture::start(Kind::Memory).await;
    let a = f.addr;
    let login = Req::get("/login").send(a).await;
    assert_eq!(login.status, 200);
    let csrf = csrf_in(&login.body);
    let origin = format!("http://{a}");
    // wrong secret
    let r = Req::post("/login")
        .header("Origin", &origin)
        .form(&[("csrf", &csrf), ("user", ""), ("secret", "wrong-secret")])
        .send(a)
        .await;
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    // without the CSRF token
    let r = Req::post("/login")
        .header("Origin", &origin)
        .form(&[("secret", OPERATOR)])
        .send(a)
        .await;
    assert_eq!(r.status, 403);
    // right
    let r = Req::post("/login")
        .header("Origin", &origin)
        .form(&[("csrf", &csrf), ("user", "viewer"), ("secret", VIEWER)])
        .send(a)
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = r
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    let page = Req::get("/").header("Cookie", &pair).send(a).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("viewer (viewer)"), "{}", page.body);
    // a viewer's pages offer no action
    let inv = Req::get("/invocations")
        .header("Cookie", &pair)
        .send(a)
        .await;
    assert!(!inv.body.contains("/actions/cancel"), "{}", inv.body);
    // the sign-in form's token is not the signed-in users' one: it
    // authorizes no other POST, and the login page never shows the other
    let main_csrf = csrf_in(&page.body);
    assert_ne!(main_csrf, csrf);
    assert!(!login.body.contains(&main_csrf));
    let r = Req::post("/logout")
        .header("Cookie", &pair)
        .header("Origin", &origin)
        .form(&[("csrf", &csrf)])
        .send(a)
        .await;
    assert_eq!(r.status, 403);
    let r = Req::post("/api/actions/cancel")
        .bearer(OPERATOR)
        .header("X-CSRF-Token", &csrf)
        .json(&serde_json::json!({ "ids": [f.seeded.queued[0]], "confirm": true }))
        .send(a)
        .await;
    assert_eq!(r.status, 403);
    // signing out ends the session
    let r = Req::post("/logout")
        .header("Cookie", &pair)
        .header("Origin", &origin)
        .form(&[("csrf", &main_csrf)])
        .send(a)
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(
        Req::get("/api/overview")
            .header("Cookie", &pair)
            .send(a)
            .await
            .status,
        401
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_cannot_act() {
    let f = Fixture::start(Kind::Memory).await;
    let csrf = f.csrf().await;
    let id = f.seeded.queued[0].clone();
    for (path, body) in [
        (
            "/api/actions/cancel",
            serde_json::json!({ "ids": [id], "confirm": true }),
        ),
        ("/api/actions/purge", serde_json::json!({ "confirm": true })),
    ] {
        let r = Req::post(path)
            .bearer(VIEWER)
            .header("X-CSRF-Token", &csrf)
            .json(&body)
            .send(f.addr)
            .await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
    }
    let r = Req::post("/actions/cancel")
        .bearer(VIEWER)
        .form(&[("csrf", &csrf), ("ids", &id), ("confirm", "yes")])
        .send(f.addr)
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(f.status(&id).await, "registered");
    assert!(f.api("/api/audit").await["audit"]
        .as_array()
        .unwrap()
        .is_empty());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_need_the_csrf_token_and_the_same_origin() {
    let f = Fixture::start(Kind::Memory).await;
    let a = f.addr;
    let csrf = f.csrf().await;
    let id = f.seeded.queued[0].clone();
    let body = serde_json::json!({ "ids": [id], "confirm": true });
    let post = || {
        Req::post("/api/actions/cancel")
            .bearer(OPERATOR)
            .json(&body)
    };
    // missing, wrong
    assert_eq!(post().send(a).await.status, 403);
    assert_eq!(
        post().header("X-CSRF-Token", "0123").send(a).await.status,
        403
    );
    // cross-origin, with the right token
    for (k, v) in [
        ("Origin", "http://evil.example"),
        ("Origin", "null"),
        ("Referer", "http://evil.example/page"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let r = post()
            .header("X-CSRF-Token", &csrf)
            .header(k, v)
            .send(a)
            .await;
        assert_eq!(r.status, 403, "{k}: {v}");
    }
    assert_eq!(f.status(&id).await, "registered");
    // same origin, right token: done
    let r = post()
        .header("X-CSRF-Token", &csrf)
        .header("Origin", &format!("http://{a}"))
        .send(a)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(f.status(&id).await, "cancelled");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_never_act_and_other_methods_are_refused() {
    let f = Fixture::start(Kind::Memory).await;
    let id = f.seeded.queued[0].clone();
    for path in [
        format!("/actions/cancel?ids={id}&confirm=yes"),
        format!("/api/actions/cancel?ids={id}&confirm=true"),
        "/logout".to_string(),
    ] {
        let r = Req::get(&path).bearer(OPERATOR).send(f.addr).await;
        assert_eq!(r.status, 405, "GET {path}: {}", r.body);
    }
    let csrf = f.csrf().await;
    let r = Req {
        method: "DELETE".into(),
        ..Req::get(&format!("/api/invocations/{id}"))
    }
    .bearer(OPERATOR)
    .header("X-CSRF-Token", &csrf)
    .send(f.addr)
    .await;
    assert_eq!(r.status, 405);
    // the purge form is a GET that only shows a form
    let page = f.page("/purge?status=success").await;
    assert!(page.contains("action=\"/actions/purge\""));
    assert_eq!(f.status(&id).await, "registered");
    assert_eq!(f.status(&f.seeded.ok).await, "success");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_pages_are_capped() {
    let f = Fixture::start_with(Kind::Memory, |o| pynenc_monitor::MonitorOptions {
        max_body_bytes: 4096,
        max_page_size: 100,
        ..o
    })
    .await;
    let csrf = f.csrf().await;
    let big = vec![b'a'; 64 * 1024];
    let r = Req::post("/api/actions/cancel")
        .bearer(OPERATOR)
        .header("X-CSRF-Token", &csrf)
        .header("Content-Type", "application/json")
        .raw_body(big)
        .send(f.addr)
        .await;
    assert_eq!(r.status, 413, "{}", r.body);
    for path in [
        "/api/invocations?limit=1000000",
        "/api/invocations?limit=101",
        "/invocations?limit=5000",
        "/api/invocations?limit=0",
    ] {
        let r = Req::get(path).bearer(OPERATOR).send(f.addr).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
    }
    assert_eq!(
        Req::get("/api/invocations?limit=100")
            .bearer(OPERATOR)
            .send(f.addr)
            .await
            .status,
        200
    );
    // more ids than a page at once
    let ids: Vec<String> = (0..101)
        .map(|_| pynenc::InvocationId::time_ordered().to_string())
        .collect();
    let r = f
        .act("cancel", serde_json::json!({ "ids": ids, "confirm": true }))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers() {
    let f = Fixture::start(Kind::Memory).await;
    let a = f.addr;
    for path in [
        "/",
        "/invocations",
        "/api/overview",
        "/metrics",
        "/assets/monitor.js",
        "/health",
    ] {
        let r = Req::get(path).bearer(OPERATOR).send(a).await;
        assert_eq!(r.status, 200, "{path}");
        assert_security_headers(&r, path);
    }
    assert_security_headers(&Req::get("/login").send(a).await, "login");
    assert_security_headers(&Req::get("/api/overview").send(a).await, "401");
    assert_security_headers(
        &Req::post("/api/actions/cancel")
            .bearer(OPERATOR)
            .send(a)
            .await,
        "403",
    );
    // no inline script or style in the pages (the CSP would block them)
    for path in [
        "/",
        "/invocations",
        "/tasks",
        "/runners",
        "/failures",
        "/config",
        "/audit",
    ] {
        let page = f.page(path).await;
        assert!(
            !page.contains("<script>") && !page.contains("style="),
            "{path}"
        );
        assert!(
            !page.contains("onclick=") && !page.contains("onload="),
            "{path}"
        );
        assert!(
            page.contains("<script src=\"/assets/htmx.min.js\""),
            "{path}"
        );
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_are_redacted_on_every_page_and_answer() {
    let f = Fixture::start(Kind::Sqlite).await;
    let id = f.seeded.secret.clone();
    let page = f.page(&format!("/invocations/{id}")).await;
    let api = Req::get(&format!("/api/invocations/{id}"))
        .bearer(OPERATOR)
        .send(f.addr)
        .await;
    for (what, text) in [("page", &page), ("api", &api.body)] {
        assert!(
            !text.contains(PASSWORD),
            "{what} shows the password: {text}"
        );
        assert!(
            text.contains(REDACTED) || text.contains("&lt;redacted&gt;"),
            "{what}: {text}"
        );
        assert!(text.contains("ann"), "{what} hides too much: {text}");
    }
    let v = api.json();
    let args = v["arguments"].as_array().unwrap();
    let arg = |n: &str| {
        args.iter().find(|a| a["name"] == n).unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(arg("password"), REDACTED);
    // the nested key is redacted inside the value (which the app's
    // `print_arguments` may truncate)
    assert!(
        arg("settings").contains(&format!("\"api_token\":\"{REDACTED}\"")),
        "{}",
        arg("settings")
    );
    for path in [
        "/api/invocations",
        "/invocations",
        "/api/overview",
        "/metrics",
        "/api/tasks",
    ] {
        let r = Req::get(path).bearer(OPERATOR).send(f.addr).await;
        assert!(!r.body.contains(PASSWORD), "{path}");
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_loopback_by_default_and_refuses_a_public_address_without_credentials() {
    assert!(MonitorOptions::default().bind.ip().is_loopback());
    let app = pynenc::Pynenc::builder()
        .app_id("monitor-bind")
        .build()
        .unwrap();
    let public = MonitorOptions::default().bind("0.0.0.0:0".parse().unwrap());
    match Monitor::start(&app, public).await {
        Err(MonitorError::InsecureBind { .. }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    // a short secret is refused too
    let weak = MonitorOptions::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .credential(pynenc_monitor::Credential::new(
            "a",
            "short",
            pynenc_monitor::Role::Operator,
        ));
    assert!(matches!(
        Monitor::start(&app, weak).await,
        Err(MonitorError::InvalidOption { .. })
    ));
    // loopback without credentials: a generated operator token
    let m = Monitor::start(
        &app,
        MonitorOptions::default().bind("127.0.0.1:0".parse().unwrap()),
    )
    .await
    .unwrap();
    let token = m.generated_token().expect("a generated token").to_string();
    assert!(token.len() >= 32);
    assert_eq!(Req::get("/api/me").send(m.addr()).await.status, 401);
    let me = Req::get("/api/me")
        .bearer(&token)
        .send(m.addr())
        .await
        .json();
    assert_eq!(me["role"], "operator");
    // a public address with credentials is allowed
    let with = MonitorOptions::default()
        .bind("0.0.0.0:0".parse().unwrap())
        .credential(pynenc_monitor::Credential::new(
            "a",
            "long-enough-secret",
            pynenc_monitor::Role::Viewer,
        ));
    let m2 = Monitor::start(&app, with).await.unwrap();
    assert!(m2.generated_token().is_none());
    m2.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), m.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_credentials_is_throttled() {
    let f = Fixture::start(Kind::Memory).await;
    for i in 0..pynenc_monitor::MAX_FAILURES {
        let r = Req::get("/api/overview")
            .bearer(&format!("guess-{i}"))
            .send(f.addr)
            .await;
        assert_eq!(r.status, 401);
    }
    // now even the right token waits for the window to move on
    let r = Req::get("/api/overview")
        .bearer(OPERATOR)
        .send(f.addr)
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("60"));
    let login = Req::get("/login").send(f.addr).await;
    let csrf = csrf_in(&login.body);
    let r = Req::post("/login")
        .form(&[("csrf", &csrf), ("secret", OPERATOR)])
        .send(f.addr)
        .await;
    assert_eq!(r.status, 429);
    // requests without credentials are not counted and still get 401
    assert_eq!(Req::get("/api/overview").send(f.addr).await.status, 401);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_secure_behind_an_https_proxy() {
    let f = Fixture::start(Kind::Memory).await;
    let login = Req::get("/login").send(f.addr).await;
    let csrf = csrf_in(&login.body);
    let r = Req::post("/login")
        .header("X-Forwarded-Proto", "https")
        .form(&[("csrf", &csrf), ("secret", OPERATOR)])
        .send(f.addr)
        .await;
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").unwrap().contains("; Secure"));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_monitor_answers_to_loopback_host_names_only() {
    // DNS rebinding: a page of evil.example resolved to 127.0.0.1
    let f = Fixture::start_with(Kind::Memory, |o| MonitorOptions {
        allowed_origins: vec!["https://mon.example.com".into()],
        ..o
    })
    .await;
    let port = f.addr.port();
    for (host, want) in [
        (format!("evil.example:{port}"), 421),
        ("evil.example".to_string(), 421),
        (format!("localhost:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
        (format!("[::1]:{port}"), 200),
        ("mon.example.com".to_string(), 200),
    ] {
        // the client sends its own Host first; a second one is refused by
        // the server, so the request is built by hand here
        let mut s = tokio::net::TcpStream::connect(f.addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(
            format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        let status: u16 = raw.split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(status, want, "Host: {host}");
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_session_cookies_are_not_counted_as_guesses() {
    let f = Fixture::start(Kind::Memory).await;
    let stale = format!("{}=0123456789abcdef", pynenc_monitor::SESSION_COOKIE);
    for _ in 0..pynenc_monitor::MAX_FAILURES + 5 {
        let r = Req::get("/api/overview")
            .header("Cookie", &stale)
            .send(f.addr)
            .await;
        assert_eq!(r.status, 401);
    }
    assert_eq!(
        Req::get("/api/overview")
            .bearer(OPERATOR)
            .send(f.addr)
            .await
            .status,
        200
    );
    f.stop().await;
}
