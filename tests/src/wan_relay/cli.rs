//! `testkit wan-relay`: starts the relay, prints `ready a=ADDR b=ADDR` (the addresses it
//! bound), then the counters of both directions on SIGUSR1 and once more on SIGTERM, SIGINT
//! or at the end of `--duration-s`, before exiting:
//!
//! ```text
//! counters a->b received=N forwarded=N lost=N queue_dropped=N reordered=N ...
//! counters b->a ...
//! ```

use super::{forward, Config};
use tokio::signal::unix::{signal, SignalKind};

fn print_counters(r: &forward::Running) {
    let (ab, ba) = r.counters();
    println!("counters a->b {ab}");
    println!("counters b->a {ba}");
}

/// Runs the relay until a signal (or the duration) ends it.
pub fn main(args: &[String]) -> Result<(), String> {
    let cfg = Config::parse(args)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        // Handlers first, so a signal sent right after "ready" is never the default action.
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let mut usr1 = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
        let running = forward::start(&cfg).map_err(|e| format!("bind: {e}"))?;
        println!("ready a={} b={}", running.a, running.b);
        let end = async {
            match cfg.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(end);
        loop {
            tokio::select! {
                _ = usr1.recv() => print_counters(&running),
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = &mut end => break,
            }
        }
        print_counters(&running);
        Ok(())
    })
}
