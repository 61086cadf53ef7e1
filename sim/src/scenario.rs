//! A scenario builder: a path, some flows, a socket configuration; `run` gives a [`Report`].

use crate::link::LinkConfig;
use crate::report::Report;
use crate::rng::mix;
use crate::sim::{Sim, A, B};
use crate::transfer::{FlowSpec, SocketFactory, Transfer};
use smoltcp::socket::tcp;
use std::rc::Rc;
use std::time::Duration;

/// A change to the simulator before a run.
type SimSetup = Box<dyn FnOnce(&mut Sim)>;

/// A path, flows over it and the sockets they use.
pub struct Scenario {
    links: [LinkConfig; 2],
    seed: u64,
    flows: Vec<FlowSpec>,
    factories: [Rc<SocketFactory>; 2],
    setup: Vec<SimSetup>,
}

impl Scenario {
    /// Links `a_to_b` and `b_to_a`; both hosts build their sockets with `socket`.
    pub fn new(
        a_to_b: LinkConfig,
        b_to_a: LinkConfig,
        socket: impl Fn() -> tcp::Socket<'static> + 'static,
    ) -> Self {
        let f: Rc<SocketFactory> = Rc::new(socket);
        Scenario {
            links: [a_to_b, b_to_a],
            seed: 1,
            flows: Vec::new(),
            factories: [f.clone(), f],
            setup: Vec::new(),
        }
    }

    /// The same impairments both ways (with independent random draws).
    pub fn symmetric(
        link: LinkConfig,
        socket: impl Fn() -> tcp::Socket<'static> + 'static,
    ) -> Self {
        Scenario::new(link.clone(), link, socket)
    }

    /// Seeds every random draw of the run (links and smoltcp's ISNs).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Adds a flow.
    pub fn flow(mut self, spec: FlowSpec) -> Self {
        self.flows.push(spec);
        self
    }

    /// Adds `n` copies of a flow.
    pub fn flows(mut self, n: usize, spec: FlowSpec) -> Self {
        self.flows.extend(std::iter::repeat_n(spec, n));
        self
    }

    /// Host B builds its sockets with `socket` instead (A keeps the first configuration).
    pub fn socket_b(mut self, socket: impl Fn() -> tcp::Socket<'static> + 'static) -> Self {
        self.factories[B] = Rc::new(socket);
        self
    }

    /// Adjusts the simulator before the run (for example a drop filter on a link).
    pub fn with_sim(mut self, f: impl FnOnce(&mut Sim) + 'static) -> Self {
        self.setup.push(Box::new(f));
        self
    }

    /// Runs until every flow ends or `limit` of virtual time passes.
    pub fn run(self, limit: Duration) -> Report {
        let [ab, ba] = self.links;
        let ab_seed = mix(self.seed.wrapping_mul(4)) ^ ab.seed;
        let ba_seed = mix(self.seed.wrapping_mul(4) + 1) ^ ba.seed;
        let mut sim = Sim::new(ab.seed(ab_seed), ba.seed(ba_seed), self.seed);
        for f in self.setup {
            f(&mut sim);
        }
        let mut app = Transfer::new(
            &mut sim.hosts,
            &self.flows,
            [&*self.factories[A], &*self.factories[B]],
        );
        let run_error = sim.run(&mut app, limit).err();
        let elapsed = Duration::from_micros(sim.now().total_micros() as u64);
        Report::new(
            app.reports(&sim.tap),
            run_error,
            elapsed,
            sim.tap.total(),
            [sim.links[A].counters(), sim.links[B].counters()],
            sim.loop_stats(),
        )
    }
}
