//! Criterion benchmarks: kpalloc (C ABI and Rust API) side by side with
//! buddy_system_allocator, bitmap-allocator and a KeOS-style bitmap, on the
//! scenarios of `scenarios/mod.rs`. Short settings: a full run takes a few
//! minutes. `cargo bench --bench pairs [-- FILTER]`; the summary table and
//! plot come from `scripts/bench.sh`.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode};

#[path = "scenarios/mod.rs"]
mod scenarios;
use scenarios::*;

fn pair_scenario(c: &mut Criterion, scenario: PairScenario, group_name: &str) {
    struct V<'a, 'c> {
        group: &'a mut BenchmarkGroup<'c, WallTime>,
        scenario: PairScenario,
    }
    impl Visitor for V<'_, '_> {
        fn visit<S: Subject>(&mut self) {
            let sc = self.scenario;
            let s = S::build(&sc.setup());
            self.group.bench_function(S::NAME, |b| {
                b.iter(|| pair(&s, black_box(sc.count), black_box(sc.align)))
            });
        }
    }
    let mut group = c.benchmark_group(group_name);
    each_subject(&mut V {
        group: &mut group,
        scenario,
    });
    group.finish();
}

fn s1_s3(c: &mut Criterion) {
    for sc in [S1, S2, S2B, S3] {
        pair_scenario(c, sc, sc.id);
    }
}

fn s5(c: &mut Criterion) {
    for (label, pages) in S5_SIZES {
        if pages != GIB_PAGES {
            pair_scenario(c, scenarios::s5(pages), &format!("S5 {label}"));
        }
    }
}

fn s4(c: &mut Criterion) {
    struct V<'a, 'c> {
        fill: &'a mut BenchmarkGroup<'c, WallTime>,
    }
    impl Visitor for V<'_, '_> {
        fn visit<S: Subject>(&mut self) {
            let setup = s4_setup();
            let pages = setup.free_pages();
            let s = S::build(&setup);
            let mut rng = s4_rng();
            // One iteration is one allocation (of a full fill from empty)
            // or one free (of a full drain in random order).
            self.fill.bench_function(format!("fill/{}", S::NAME), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut done = 0;
                    while done < iters {
                        let (handles, took) = fill(&s, pages);
                        total += took;
                        done += pages as u64;
                        drain(&s, &handles);
                    }
                    total.mul_f64(iters as f64 / done as f64)
                })
            });
            self.fill.bench_function(format!("drain/{}", S::NAME), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut done = 0;
                    while done < iters {
                        let (handles, _) = fill_shuffled(&s, pages, &mut rng);
                        total += drain(&s, &handles);
                        done += pages as u64;
                    }
                    total.mul_f64(iters as f64 / done as f64)
                })
            });
        }
    }
    let mut group = c.benchmark_group("S4");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    each_subject(&mut V { fill: &mut group });
    group.finish();
}

fn zero(c: &mut Criterion) {
    struct V<'a, 'c> {
        group: &'a mut BenchmarkGroup<'c, WallTime>,
    }
    impl Visitor for V<'_, '_> {
        fn visit<S: Subject>(&mut self) {
            let s = S::build(&Setup::empty(GIB_PAGES));
            if s.alloc_zeroed().map(|h| s.free(h, 1)).is_some() {
                self.group
                    .bench_function(format!("zero flag/{}", S::NAME), |b| b.iter(|| zero_flag_pair(&s)));
            }
            self.group
                .bench_function(format!("memset+pair/{}", S::NAME), |b| b.iter(|| memset_pair(&s)));
        }
    }
    let mut group = c.benchmark_group("zero");
    each_subject(&mut V { group: &mut group });
    group.finish();
}

fn threads(c: &mut Criterion) {
    struct V<'a, 'c> {
        group: &'a mut BenchmarkGroup<'c, WallTime>,
    }
    impl Visitor for V<'_, '_> {
        fn visit<S: Subject>(&mut self) {
            let s = S::build(&S2.setup());
            for n in [1, 2] {
                // One iteration is one pair; time per iteration is wall time
                // over all threads' pairs (aggregate).
                self.group.bench_function(format!("{n} thread/{}", S::NAME), |b| {
                    b.iter_custom(|iters| {
                        let per_thread = iters.div_ceil(n as u64);
                        let rate = threaded_pairs(&s, n, per_thread);
                        Duration::from_secs_f64(iters as f64 / rate)
                    })
                });
            }
        }
    }
    let mut group = c.benchmark_group("S2 threads");
    each_subject(&mut V { group: &mut group });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(800))
        .sample_size(20)
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = s1_s3, s5, s4, zero, threads
}
criterion_main!(benches);
