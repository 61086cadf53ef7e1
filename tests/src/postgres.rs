//! A real PostgreSQL server in a network namespace, and MD5 to check what `psql` received
//! against PostgreSQL's own `md5()`.

use crate::netns::{self, Netns};
use crate::wait_until;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

/// A PostgreSQL server in a namespace, run as the postgres user, listening on every
/// address on port 5432 and trusting every client; stopped (fast shutdown) on drop.
pub struct Postgres {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// Initialises a fresh cluster in a temp dir and starts the server in `ns` (it needs a
    /// moment before it accepts connections: poll with a query).
    pub fn start(ns: &Netns) -> Result<Postgres, String> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("postgresql not installed: {e}"))?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("postgres").exists())
            .ok_or("no postgres binary")?;
        let dir = tempfile::Builder::new()
            .prefix("nexd-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        let as_pg = [
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ];
        let mut initdb: Vec<String> = as_pg.iter().map(|s| s.to_string()).collect();
        initdb.extend([
            bin.join("initdb").display().to_string(),
            "-D".into(),
            data.display().to_string(),
            "-A".into(),
            "trust".into(),
            "-U".into(),
            "postgres".into(),
        ]);
        let refs: Vec<&str> = initdb.iter().map(String::as_str).collect();
        netns::sh(&refs)?;
        let hba = data.join("pg_hba.conf");
        let mut conf = std::fs::read_to_string(&hba).map_err(|e| e.to_string())?;
        conf.push_str("\nhost all all 0.0.0.0/0 trust\n");
        std::fs::write(&hba, conf).map_err(|e| e.to_string())?;
        let child = ns
            .command("setpriv")
            .args(&as_pg[1..])
            .arg(bin.join("postgres"))
            .args([
                "-D",
                &data.display().to_string(),
                "-k",
                &dir.path().display().to_string(),
            ])
            .args([
                "-c",
                "listen_addresses=*",
                "-c",
                "port=5432",
                "-c",
                "fsync=off",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        Ok(Postgres { child, _dir: dir })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown; it cleans up its shared memory.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        if !wait_until(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        }) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Minimal MD5 (RFC 1321) so a test can check PostgreSQL's md5() of what it received.
pub fn md5_of(data: &[u8]) -> u128 {
    let s: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32)
        .collect();
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_le_bytes());
    let (mut a0, mut b0, mut c0, mut d0) =
        (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(s[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, v) in [a0, b0, c0, d0].iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    u128::from_be_bytes(out)
}

/// [`md5_of`] as PostgreSQL's md5() prints it: 32 lowercase hex digits.
pub fn md5_hex(data: &[u8]) -> String {
    format!("{:032x}", md5_of(data))
}

/// Runs `sql` with psql from `ns` against PostgreSQL reached at 127.0.0.1:`port` (as user
/// postgres, unaligned rows, stopping at the first error): its output.
pub fn psql(ns: &Netns, port: u16, sql: &str) -> Result<String, String> {
    let port = port.to_string();
    ns.run(&[
        "psql",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "postgres",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
    ])
}

/// Polls `select 1` through 127.0.0.1:`port` until PostgreSQL answers, for at most
/// `deadline`; the last error when it never does.
pub fn wait_ready(ns: &Netns, port: u16, deadline: Duration) -> Result<(), String> {
    let mut last = String::new();
    let up = wait_until(deadline, || match psql(ns, port, "select 1") {
        Ok(o) => o.trim() == "1",
        Err(e) => {
            last = e;
            false
        }
    });
    if up {
        Ok(())
    } else {
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::md5_hex;

    #[test]
    fn md5_matches_known_vectors() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        // Leading zero digits are kept (PostgreSQL prints 32 digits).
        assert_eq!(md5_hex(b"168"), "006f52e9102a8d3be2fe5614f42ba989");
    }
}
