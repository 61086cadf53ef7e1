//! Bad input makes nexd exit at once, non-zero, with one line naming the problem and the
//! offending value; never a panic.

use nexd_e2e::free_port;
use nexd_e2e::nexd::{config, run_to_exit, Keypair, PeerSpec, Scratch};
use std::time::Duration;

/// A config with one peer at `endpoint`, written to `name`; returns its path.
fn config_with_endpoint(scratch: &Scratch, name: &str, endpoint: &str) -> String {
    let (k, p) = (Keypair::generate(), Keypair::generate());
    let text = config(
        &k.private,
        "100.100.0.1/32",
        free_port(),
        &[PeerSpec {
            public: &p.public,
            allowed_ips: "100.100.0.2/32",
            endpoint: Some(endpoint.into()),
        }],
    );
    scratch.write(name, &text).display().to_string()
}

fn valid_config(scratch: &Scratch) -> String {
    config_with_endpoint(scratch, "ok.conf", "127.0.0.1:9")
}

/// Runs nexd and checks: exits within 5 s, non-zero, one stderr line containing `want`.
fn expect_failure(args: &[&str], want: &[&str]) {
    let (code, stderr) = run_to_exit(args, Duration::from_secs(5));
    let code = code.unwrap_or_else(|| panic!("nexd {args:?} did not exit: {stderr}"));
    assert_ne!(code, 0, "nexd {args:?} succeeded");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    for w in want {
        assert!(stderr.contains(w), "{stderr:?} should mention {w:?}");
    }
}

#[test]
fn bad_rules_name_the_value() {
    let s = Scratch::new();
    let c = valid_config(&s);
    for (flag, rule, words) in [
        (
            "--egress",
            "tcp:0:100.100.0.2:80",
            vec!["\"0\"", "1 to 65535"],
        ),
        ("--egress", "tcp:65536:100.100.0.2:80", vec!["\"65536\""]),
        ("--ingress", "tcp:80:127.0.0.1:99999", vec!["\"99999\""]),
        (
            "--ingress",
            "sctp:80:127.0.0.1:80",
            vec!["\"sctp\"", "tcp or udp"],
        ),
        ("--egress", "tcp:80:not-an-ip:80", vec!["\"not-an-ip\""]),
        ("--egress", "tcp:80:100.100.0.2", vec!["too few fields"]),
        ("--egress", "tcp", vec!["too few fields"]),
    ] {
        let mut w = vec![flag];
        w.extend(words);
        expect_failure(&["proxy", "--config", &c, flag, rule], &w);
    }
}

#[test]
fn missing_or_unreadable_config() {
    expect_failure(
        &["proxy", "--config", "/nonexistent/nexd.conf"],
        &["/nonexistent/nexd.conf", "cannot read"],
    );
}

#[test]
fn bad_config_contents_name_line_and_value() {
    let s = Scratch::new();
    let k = Keypair::generate();
    let cases = [
        ("[Interface]\nPrivateKey = nope\nAddress = 10.0.0.1/32\n", vec!["line 2", "PrivateKey", "\"nope\""]),
        (
            &*format!("[Interface]\nPrivateKey = {}\nAddress = 10.0.0.300/32\n", k.private),
            vec!["line 3", "Address", "10.0.0.300"],
        ),
        (
            &*format!("[Interface]\nPrivateKey = {}\nAddress = 10.0.0.1/32\nColor = blue\n", k.private),
            vec!["line 4", "Color"],
        ),
        (
            &*format!("[Interface]\nPrivateKey = {}\nAddress = 10.0.0.1/32\n[Peer]\nPublicKey = short\n", k.private),
            vec!["line 5", "PublicKey", "\"short\""],
        ),
        (
            &*format!("[Interface]\nPrivateKey = {}\nAddress = 10.0.0.1/32\n[Peer]\nPublicKey = {}\nEndpoint = no-port\n", k.private, k.public),
            vec!["line 6", "Endpoint", "\"no-port\""],
        ),
        ("", vec!["[Interface]"]),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = s.write(&format!("bad{i}.conf"), text);
        let path = p.display().to_string();
        let mut w = want.clone();
        w.push(&path);
        expect_failure(&["proxy", "--config", &path], &w);
    }
}

#[test]
fn unresolvable_endpoint_is_named() {
    let s = Scratch::new();
    let c = config_with_endpoint(&s, "ep.conf", "no-such-host.invalid:51820");
    expect_failure(&["proxy", "--config", &c], &["no-such-host.invalid:51820"]);
}

#[test]
fn egress_port_already_in_use() {
    let s = Scratch::new();
    let c = valid_config(&s);
    let busy = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let rule = format!("tcp:{port}:100.100.0.2:80");
    expect_failure(
        &["proxy", "--config", &c, "--egress", &rule],
        &[&port.to_string(), "already in use"],
    );
}

#[test]
fn wireguard_port_already_in_use() {
    let s = Scratch::new();
    let busy = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let k = Keypair::generate();
    let c = s
        .write("c.conf", &config(&k.private, "100.100.0.1/32", port, &[]))
        .display()
        .to_string();
    expect_failure(
        &["proxy", "--config", &c],
        &[&port.to_string(), "WireGuard"],
    );
}

#[test]
fn ipv6_rule_without_an_ipv6_tunnel_address() {
    let s = Scratch::new();
    let c = valid_config(&s);
    expect_failure(
        &[
            "proxy",
            "--config",
            &c,
            "--egress",
            &format!("tcp:{}:[fd00::2]:80", free_port()),
        ],
        &["fd00::2", "IPv6"],
    );
}

#[test]
fn bad_log_level_and_agent_mode() {
    expect_failure(&["--log-level", "loud", "version"], &["\"loud\""]);
    let (code, stderr) = run_to_exit(&["agent"], Duration::from_secs(5));
    assert_eq!(code, Some(69), "{stderr}");
    assert!(stderr.contains("not yet implemented"));
}

#[test]
fn global_flags_work_before_and_after_the_subcommand() {
    for args in [
        vec!["--state-dir", "/tmp/x", "version"],
        vec![
            "version",
            "--state-dir",
            "/tmp/x",
            "--unix-socket",
            "/tmp/x.sock",
            "--log-level",
            "warn",
        ],
    ] {
        let (code, stderr) = run_to_exit(&args, Duration::from_secs(5));
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
    }
}
