//! The summary table and plot: runs every scenario of `scenarios/mod.rs` on
//! every allocator with its own timing loop (medians of groups of
//! batches), in RUNS processes of its own one after another, and takes
//! each cell's median over them; prints a markdown table with kpalloc's
//! targets and its ratios to each peer, writes it to docs/bench.md (or the
//! path in KPALLOC_BENCH_MD) and plots ns per pair against memory size to
//! docs/bench.png (KPALLOC_BENCH_PNG).
//!
//! `cargo bench --bench table` (what scripts/bench.sh runs).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use plotters::prelude::*;

#[path = "scenarios/mod.rs"]
mod scenarios;
use scenarios::*;

/// Batches per median, and the time one batch should take.
const BATCHES: usize = 13;
const BATCH_TIME: Duration = Duration::from_micros(200);
/// Groups of BATCHES batches each time is the mean of the medians of. This
/// bench's machine switches between two speeds for stretches of
/// milliseconds to seconds, mid-process and at fixed addresses, for any
/// code that touches a few dozen cache lines (a loop of read-modify-writes
/// over 32 lines: 26 or 36 to 41 ns a round), so the mean over groups weighs
/// both as they came.
const GROUPS: usize = 8;
/// Whole runs, each in a process of its own: the machine's pace also
/// changes for seconds at a time (every allocator's S3, say, twice as slow
/// in one run as in the next). The table has each cell's median over the
/// runs.
const RUNS: usize = 3;
/// Set in a run's process: the file its rows go to.
const ROWS_OUT: &str = "KPALLOC_BENCH_ROWS_OUT";
/// Repetitions of the S4 fill/drain.
const REPEATS: usize = 5;
/// Repetitions of the thread runs: more, because the runs are short and
/// each meets the machine at one speed (see GROUPS).
const THREAD_REPEATS: usize = 11;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

/// ns per call of `op`: the mean over GROUPS groups of the median of
/// BATCHES batches in each.
fn ns_per_call(mut op: impl FnMut()) -> f64 {
    // Calibrate: how many calls make a batch of BATCH_TIME.
    let mut batch = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            op();
        }
        if start.elapsed() >= BATCH_TIME / 4 || batch >= 1 << 24 {
            let per = start.elapsed().as_nanos() as f64 / batch as f64;
            batch = ((BATCH_TIME.as_nanos() as f64 / per.max(0.1)) as u64).max(1);
            break;
        }
        batch *= 2;
    }
    for _ in 0..3 {
        time_batch(batch, &mut op);
    }
    let per_group: f64 = (0..GROUPS)
        .map(|_| median((0..BATCHES).map(|_| time_batch(batch, &mut op)).collect()))
        .sum();
    per_group / GROUPS as f64
}

/// One value per allocator (in `SUBJECTS` order).
type Cells = [Option<f64>; 5];

#[derive(Clone, Copy, PartialEq)]
enum Better {
    Lower,
    Higher,
}

struct Row {
    label: String,
    target: Option<(f64, Better)>,
    unit: &'static str,
    cells: Cells,
}

/// A run's rows as text, a row per line: label, unit, target, whether
/// lower is better, then the cells ("-" for none), tab-separated.
fn save_rows(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        let (target, lower) = match row.target {
            Some((t, better)) => (t.to_string(), (better == Better::Lower).to_string()),
            None => ("-".into(), "-".into()),
        };
        let cells: Vec<String> = row
            .cells
            .iter()
            .map(|c| c.map_or("-".into(), |v| v.to_string()))
            .collect();
        let _ = writeln!(
            out,
            "{}\t{}\t{target}\t{lower}\t{}",
            row.label,
            row.unit,
            cells.join("\t")
        );
    }
    out
}

fn load_rows(text: &str) -> Vec<Row> {
    let units = ["ns/pair", "ns/alloc", "ns/free", "ratio", "Mpairs/s"];
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 4 + 5, "bad row {line:?}");
            let number = |f: &str| (f != "-").then(|| f.parse::<f64>().expect("a number"));
            let target = number(fields[2]).map(|t| {
                (
                    t,
                    if fields[3] == "true" {
                        Better::Lower
                    } else {
                        Better::Higher
                    },
                )
            });
            let mut cells = [None; 5];
            for (cell, field) in cells.iter_mut().zip(&fields[4..]) {
                *cell = number(field);
            }
            Row {
                label: fields[0].into(),
                target,
                unit: units.into_iter().find(|u| *u == fields[1]).expect("a known unit"),
                cells,
            }
        })
        .collect()
}

/// Each cell's median over the runs (which have the same rows).
fn median_rows(runs: Vec<Vec<Row>>) -> Vec<Row> {
    let mut runs = runs.into_iter();
    let mut rows = runs.next().expect("at least one run");
    let others: Vec<Vec<Row>> = runs.collect();
    for (i, row) in rows.iter_mut().enumerate() {
        for (column, cell) in row.cells.iter_mut().enumerate() {
            let values: Option<Vec<f64>> = std::iter::once(*cell)
                .chain(others.iter().map(|run| {
                    assert_eq!(run[i].label, row.label, "runs with different rows");
                    run[i].cells[column]
                }))
                .collect();
            *cell = values.map(median);
        }
    }
    rows
}

/// Measures `scenario`'s pairs on every allocator.
fn pair_row(scenario: PairScenario) -> Cells {
    struct V {
        scenario: PairScenario,
        cells: Vec<Option<f64>>,
    }
    impl Visitor for V {
        fn visit<S: Subject>(&mut self) {
            let sc = self.scenario;
            let s = S::build(&sc.setup());
            let ns = ns_per_call(|| pair(&s, std::hint::black_box(sc.count), std::hint::black_box(sc.align)));
            eprintln!("  {} {} pages {}: {ns:.1} ns", sc.id, sc.pages, S::NAME);
            self.cells.push(Some(ns));
        }
    }
    let mut v = V {
        scenario,
        cells: Vec::new(),
    };
    each_subject(&mut v);
    v.cells.try_into().unwrap()
}

/// A measurement that gives each allocator two cells (two rows of the table).
trait TwoCells {
    fn measure<S: Subject>(&self) -> (Option<f64>, Option<f64>);
}

/// Runs `measurement` on every allocator, in the table's column order.
fn two_rows(measurement: impl TwoCells) -> (Cells, Cells) {
    struct V<M> {
        measurement: M,
        first: Vec<Option<f64>>,
        second: Vec<Option<f64>>,
    }
    impl<M: TwoCells> Visitor for V<M> {
        fn visit<S: Subject>(&mut self) {
            let (first, second) = self.measurement.measure::<S>();
            self.first.push(first);
            self.second.push(second);
        }
    }
    let mut v = V {
        measurement,
        first: Vec::new(),
        second: Vec::new(),
    };
    each_subject(&mut v);
    (v.first.try_into().unwrap(), v.second.try_into().unwrap())
}

/// S4: ns per allocation filling the region, ns per free draining it in
/// random order.
fn s4_rows() -> (Cells, Cells) {
    struct FillDrain;
    impl TwoCells for FillDrain {
        fn measure<S: Subject>(&self) -> (Option<f64>, Option<f64>) {
            let setup = s4_setup();
            let pages = setup.free_pages();
            let s = S::build(&setup);
            let mut rng = s4_rng();
            let (mut fills, mut drains) = (Vec::new(), Vec::new());
            for _ in 0..REPEATS {
                let (handles, took) = fill_shuffled(&s, pages, &mut rng);
                fills.push(took.as_nanos() as f64 / pages as f64);
                drains.push(drain(&s, &handles).as_nanos() as f64 / pages as f64);
            }
            let (f, d) = (median(fills), median(drains));
            eprintln!("  S4 {}: fill {f:.1} ns/alloc, drain {d:.1} ns/free", S::NAME);
            (Some(f), Some(d))
        }
    }
    two_rows(FillDrain)
}

/// ns per pair with the zero flag, and with a memset of the page instead.
fn zero_rows() -> (Cells, Cells) {
    struct Zero;
    impl TwoCells for Zero {
        fn measure<S: Subject>(&self) -> (Option<f64>, Option<f64>) {
            let s = S::build(&Setup::empty(GIB_PAGES));
            let flag = s
                .alloc_zeroed()
                .map(|h| s.free(h, 1))
                .map(|()| ns_per_call(|| zero_flag_pair(&s)));
            let memset = ns_per_call(|| memset_pair(&s));
            eprintln!("  zero {}: flag {flag:?} ns, memset+pair {memset:.1} ns", S::NAME);
            (flag, Some(memset))
        }
    }
    two_rows(Zero)
}

/// S2 pairs per second (millions) on one thread and on two.
fn thread_rows() -> (Cells, Cells) {
    struct Threads;
    impl TwoCells for Threads {
        fn measure<S: Subject>(&self) -> (Option<f64>, Option<f64>) {
            let s = S::build(&S2.setup());
            // About 50 ms per run on one thread.
            let per_pair = ns_per_call(|| pair(&s, S2.count, S2.align));
            let pairs = ((50e6 / per_pair) as u64).max(1000);
            // Interleaved, so that a change in the machine's pace during
            // the runs weighs on both alike.
            let (mut ones, mut twos) = (Vec::new(), Vec::new());
            for _ in 0..THREAD_REPEATS {
                ones.push(threaded_pairs(&s, 1, pairs));
                twos.push(threaded_pairs(&s, 2, pairs));
            }
            let (one, two) = (median(ones), median(twos));
            eprintln!(
                "  threads {}: 1T {:.2} M/s, 2T {:.2} M/s",
                S::NAME,
                one / 1e6,
                two / 1e6
            );
            (Some(one / 1e6), Some(two / 1e6))
        }
    }
    two_rows(Threads)
}

fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn verdict(value: Option<f64>, target: Option<(f64, Better)>) -> String {
    match (value, target) {
        (Some(v), Some((t, Better::Lower))) if v <= t => "met".into(),
        (Some(v), Some((t, Better::Lower))) => format!("**missed** ({:.1}×)", v / t),
        (Some(v), Some((t, Better::Higher))) if v >= t => "met".into(),
        (Some(v), Some((t, Better::Higher))) => format!("**missed** ({:.2} < {t})", v),
        _ => String::new(),
    }
}

/// The issue's figures (ns) for the two peers this bench builds as the
/// issue did, on the machine its targets were set on: (row label prefix,
/// KeOS-style, bitmap-allocator). buddy_system_allocator is left out: the
/// issue's setup for it differs (its S2b took 249 ns there; here, with only
/// the free pages inserted, about 30).
const ISSUE_FIGURES: [(&str, f64, f64); 9] = [
    ("S1 ", 5.6, 18.7),
    ("S2 ", 5.6, 20.0),
    ("S2b ", 1026.0, 15.4),
    ("S3 ", 756.0, 4214.0),
    ("S4 fill", 595.0, 10.2),
    ("S4 drain", 3.9, 3.5),
    ("S5 S2b at 256 MiB", 271.0, 11.6),
    ("S5 S2b at 4 GiB", 4150.0, 14.5),
    ("S5 S2b at 64 GiB", 66399.0, 17.4),
];

/// How much slower this run's machine is than the one the targets were set
/// on: the median, over every cell with an issue figure, of this run's time
/// over that figure. One cell alone swings with the run (KeOS-style S1 has
/// given factors from 2.5 to 4.5), and the cells disagree with each other
/// (short pairs, where this machine's atomics weigh, against long scans),
/// so no single one stands for the machine.
struct MachineFactor {
    median: f64,
    min: f64,
    max: f64,
    cells: usize,
}

fn machine_factor(rows: &[Row]) -> Option<MachineFactor> {
    let mut ratios = Vec::new();
    for (prefix, keos, bitmap) in ISSUE_FIGURES {
        let mut matching = rows.iter().filter(|row| row.label.starts_with(prefix));
        let row = matching
            .next()
            .unwrap_or_else(|| panic!("no row for the issue's {prefix:?}"));
        assert!(matching.next().is_none(), "two rows for the issue's {prefix:?}");
        for (column, figure) in [(2, keos), (4, bitmap)] {
            ratios.extend(row.cells[column].map(|ns| ns / figure));
        }
    }
    let cells = ratios.len();
    let (min, max) = ratios
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    (cells > 0).then(|| MachineFactor {
        median: median(ratios),
        min,
        max,
        cells,
    })
}

/// The target scaled by the machine factor (times only, not ratios).
fn scaled(row: &Row, factor: Option<&MachineFactor>) -> Option<(f64, Better)> {
    match (row.target, factor) {
        (Some((t, Better::Lower)), Some(f)) if row.unit.starts_with("ns") => Some((t * f.median, Better::Lower)),
        (target, _) => target,
    }
}

fn markdown(rows: &[Row]) -> String {
    let factor = machine_factor(rows);
    let mut out = String::new();
    out.push_str("| scenario | unit | target | kpalloc C ABI | kpalloc Rust | KeOS-style | buddy_system_allocator | bitmap-allocator | C/KeOS | C/buddy | C/bitmap | kpalloc (C ABI) vs target | vs target × machine factor |\n");
    out.push_str("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|---|\n");
    for row in rows {
        let target = match row.target {
            Some((t, Better::Lower)) => format!("≤{t}"),
            Some((t, Better::Higher)) => format!("≥{t}"),
            None => String::new(),
        };
        let c = row.cells;
        let ratio = |peer: Option<f64>| match (c[0], peer) {
            (Some(k), Some(p)) => format!("{:.2}", k / p),
            _ => "—".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.label,
            row.unit,
            target,
            fmt_value(c[0]),
            fmt_value(c[1]),
            fmt_value(c[2]),
            fmt_value(c[3]),
            fmt_value(c[4]),
            ratio(c[2]),
            ratio(c[3]),
            ratio(c[4]),
            verdict(c[0], row.target),
            verdict(c[0], scaled(row, factor.as_ref())),
        );
    }
    if let Some(f) = factor {
        let _ = write!(
            out,
            "\nMachine factor {:.2}: the median, over the {} cells where the issue gives a figure for KeOS-style or \
             bitmap-allocator (set up here as there), of this run's time over the issue's, on the machine the targets \
             were set on (the cells range from {:.2} to {:.2}). The last column compares kpalloc with each time target \
             multiplied by it; the column before, with the targets as written.\n",
            f.median, f.cells, f.min, f.max
        );
    }
    out
}

fn machine() -> String {
    let lscpu = std::process::Command::new("lscpu")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let model = lscpu
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Model name:"))
                .map(|l| l.trim_start_matches("Model name:").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{cores} cores, {model}; load average at the end of the run: {}",
        load.join(" ")
    )
}

fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// ns per pair (S2b) against memory size, one line per allocator, log-log.
fn plot(path: &str, sizes: &[(&str, usize)], series: &[Cells]) -> Result<(), Box<dyn std::error::Error>> {
    let font = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"]
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .ok_or("no DejaVuSans.ttf: apt-get install fonts-dejavu-core")?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into_boxed_slice()))
        .map_err(|_| "bad font")?;
    let gib: Vec<f64> = sizes
        .iter()
        .map(|&(_, pages)| pages as f64 / GIB_PAGES as f64)
        .collect();
    let values = series.iter().flatten().flatten().copied();
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let root = BitMapBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "S2b: 90% used, free pages at the end — one 1-page alloc+free",
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((0.18f64..90f64).log_scale().base(2.0), (lo / 2.0..hi * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("memory (GiB, 4 KiB pages)")
        .y_desc("ns per alloc+free pair (median)")
        .x_label_formatter(&|v| if *v < 1.0 { format!("{v:.2}") } else { format!("{v:.0}") })
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 16))
        .draw()?;
    let colors = [RED, BLUE, BLACK, GREEN, MAGENTA];
    for (i, name) in SUBJECTS.iter().enumerate() {
        let color = colors[i];
        let points: Vec<(f64, f64)> = gib
            .iter()
            .zip(series.iter())
            .filter_map(|(&x, cells)| cells[i].map(|y| (x, y)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Runs `n` pairs; a function of its own for `callgrind --toggle-collect`.
#[inline(never)]
fn profiled_pairs<S: Subject>(s: &S, sc: PairScenario, n: u64) {
    for _ in 0..n {
        pair(s, std::hint::black_box(sc.count), std::hint::black_box(sc.align));
    }
}

/// What `KPALLOC_BENCH_PROFILE` runs under callgrind.
#[derive(Clone, Copy)]
enum Profiled {
    Pairs(PairScenario),
    /// The S4 drain: every page of 1 GiB freed in random order.
    Drain,
}

/// `KPALLOC_BENCH_PROFILE=S2b` (or S1, S2, S3, S4drain), optionally
/// `KPALLOC_BENCH_SUBJECT=0` (the table's column, 0 = kpalloc C ABI), with
/// `KPALLOC_BENCH_ARENA_GIB=16` under valgrind: builds the scenario
/// for every allocator and runs 100000 pairs of each in `profiled_pairs`
/// (or the S4 drain's frees in `free_each`, printing their number),
/// nothing else, for `valgrind --tool=callgrind
/// --toggle-collect='*profiled_pairs*'` (or `'*free_each*'`): instructions
/// per pair (or free) without the noise of timing.
fn profile(which: &str) {
    let profiled = match which {
        "S1" => Profiled::Pairs(S1),
        "S2" => Profiled::Pairs(S2),
        "S2b" => Profiled::Pairs(S2B),
        "S3" => Profiled::Pairs(S3),
        "S4drain" => Profiled::Drain,
        other => panic!("unknown scenario {other}"),
    };
    // KPALLOC_BENCH_SUBJECT=i (column i of the table) profiles one allocator.
    let only: Option<usize> = std::env::var("KPALLOC_BENCH_SUBJECT").ok().and_then(|v| v.parse().ok());
    struct V(Profiled, Option<usize>, usize);
    impl Visitor for V {
        fn visit<S: Subject>(&mut self) {
            if self.1.is_none_or(|i| i == self.2) {
                match self.0 {
                    Profiled::Pairs(sc) => profiled_pairs(&S::build(&sc.setup()), sc, 100_000),
                    Profiled::Drain => {
                        let setup = s4_setup();
                        let s = S::build(&setup);
                        let (handles, _) = fill_shuffled(&s, setup.free_pages(), &mut s4_rng());
                        free_each(&s, &handles);
                        // How many frees the profile holds.
                        println!("{}", handles.len());
                    }
                }
            }
            self.2 += 1;
        }
    }
    each_subject(&mut V(profiled, only, 0));
}

/// One run: every row of the table, measured.
fn measure_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let ns = "ns/pair";
    let lower = |t| Some((t, Better::Lower));
    let targets = [12.0, 12.0, 12.0, 27.0];
    let mut s2b = None;
    for (sc, target) in [S1, S2, S2B, S3].into_iter().zip(targets) {
        eprintln!("{} {}", sc.id, sc.title);
        let cells = pair_row(sc);
        if sc.id == "S2b" {
            s2b = Some(cells);
        }
        rows.push(Row {
            label: format!("{} {}", sc.id, sc.title),
            target: lower(target),
            unit: ns,
            cells,
        });
    }
    // S4 runs last (its rows go here): it touches the metadata of a whole
    // GiB over and over, and on this bench's machine the rows measured
    // after it could run up to twice as slow, every allocator alike.
    let s4_at = rows.len();
    eprintln!("S5 sizes");
    for (label, pages) in S5_SIZES {
        let cells = if pages == GIB_PAGES {
            s2b.unwrap()
        } else {
            pair_row(scenarios::s5(pages))
        };
        rows.push(Row {
            label: format!("S5 S2b at {label}"),
            target: lower(12.0),
            unit: ns,
            cells,
        });
    }
    eprintln!("zero");
    let (flag, memset) = zero_rows();
    rows.push(Row {
        label: "zero: 1 page with PAGE_ALLOC_ZERO".into(),
        target: None,
        unit: ns,
        cells: flag,
    });
    rows.push(Row {
        label: "zero: memset 4 KiB + plain pair".into(),
        target: None,
        unit: ns,
        cells: memset,
    });
    let mut zero_ratio = [None; 5];
    for i in 0..5 {
        zero_ratio[i] = flag[i].zip(memset[i]).map(|(f, m)| f / m);
    }
    rows.push(Row {
        label: "zero: flag / (memset + pair)".into(),
        target: lower(1.2),
        unit: "ratio",
        cells: zero_ratio,
    });
    eprintln!("threads");
    let (one, two) = thread_rows();
    rows.push(Row {
        label: "S2, 1 thread".into(),
        target: None,
        unit: "Mpairs/s",
        cells: one,
    });
    rows.push(Row {
        label: "S2, 2 threads on 2 cores (aggregate)".into(),
        target: None,
        unit: "Mpairs/s",
        cells: two,
    });
    let mut scaling = [None; 5];
    for i in 0..5 {
        scaling[i] = two[i].zip(one[i]).map(|(t, o)| t / o);
    }
    rows.push(Row {
        label: "S2, 2 threads / 1 thread".into(),
        target: Some((1.5, Better::Higher)),
        unit: "ratio",
        cells: scaling,
    });

    eprintln!("S4 fill / drain");
    let (fill, drain) = s4_rows();
    let s4 = [
        Row {
            label: "S4 fill from empty".into(),
            target: lower(10.0),
            unit: "ns/alloc",
            cells: fill,
        },
        Row {
            label: "S4 drain in random order".into(),
            target: lower(8.0),
            unit: "ns/free",
            cells: drain,
        },
    ];
    rows.splice(s4_at..s4_at, s4);
    rows
}

fn main() {
    if let Ok(which) = std::env::var("KPALLOC_BENCH_PROFILE") {
        return profile(&which);
    }
    if let Ok(path) = std::env::var(ROWS_OUT) {
        let rows = measure_rows();
        std::fs::write(&path, save_rows(&rows)).expect("write the run's rows");
        return;
    }
    // `cargo bench` passes `--bench`; nothing else is taken.
    let md_path = std::env::var("KPALLOC_BENCH_MD")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/bench.md").into());
    let png_path = std::env::var("KPALLOC_BENCH_PNG")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/bench.png").into());
    let started = Instant::now();
    let runs: Vec<Vec<Row>> = (1..=RUNS)
        .map(|run| {
            eprintln!("run {run} of {RUNS}");
            let path = std::env::temp_dir().join(format!("kpalloc-bench-rows-{}-{run}", std::process::id()));
            let status = std::process::Command::new(std::env::current_exe().expect("the bench's own path"))
                .env(ROWS_OUT, &path)
                .status()
                .expect("run the bench");
            assert!(status.success(), "run {run} failed: {status}");
            let text = std::fs::read_to_string(&path).expect("read the run's rows");
            let _ = std::fs::remove_file(&path);
            load_rows(&text)
        })
        .collect();
    let rows = median_rows(runs);
    let s5_cells: Vec<Cells> = rows
        .iter()
        .filter(|row| row.label.starts_with("S5 "))
        .map(|row| row.cells)
        .collect();
    assert_eq!(s5_cells.len(), S5_SIZES.len(), "one S5 row per size");

    let table = markdown(&rows);
    let doc = format!(
        "# kpalloc benchmarks\n\n\
         Measured {date} on {machine}. Single thread unless stated, 1 GiB (262144 pages) unless stated; \
         each value is the median over {RUNS} runs, each a process of its own, one after another, of: \
         the mean, over {GROUPS} groups, of the median of {BATCHES} batches of about {batch_us} µs \
         (S4: median of {REPEATS} fills and drains; threads: of {THREAD_REPEATS} runs, each on new threads with new stacks). \
         Ratios are kpalloc C ABI / peer (below 1: kpalloc is faster; for the thread ratio, above 1 is better). \
         Every allocator runs behind a spin lock; bitmap-allocator is `BitAlloc256M` at every size. \
         Reproduce with `scripts/bench.sh` (criterion: `cargo bench --manifest-path benches/Cargo.toml --bench pairs`). Run time {secs:.0} s.\n\n\
         The machine is shared: a load average well above 2 on 2 cores inflates every column alike \
         (time slices are lost mid-batch), so compare the columns of one run, the ratios, \
         and the instruction counts below rather than absolute ns with other runs.\n\n\
         What is measured:\n\n\
         - kpalloc C ABI: the `extern \"C\"` functions (`page_alloc_aligned`, `page_free`, ...) called from Rust, \
           over the process's one global, with a `cpu_id` hook (a thread-local read, as a kernel's per-CPU variable): \
           single pages go through the per-CPU caches. Each scenario adds its own region below all earlier ones, \
           and a finished scenario's region is filled so that only the current one has free pages.\n\
         - kpalloc Rust: an `Allocator` instance without per-CPU caches (every call takes the lock), \
           `alloc(count, align, flags)` / `free(pa)`.\n\
         - KeOS-style: a model written for this bench (benches/scenarios/mod.rs): spin-locked bitmap (1 = free), \
           `AtomicU64` refcount per page, first-fit scan from bit 0 on every call skipping all-zero words, no summary, \
           no zero-fill, and none of the reference's bugs.\n\
         - buddy_system_allocator 0.13 `FrameAllocator<33>` in a `spin::Mutex`; frame numbers are physical frame numbers; \
           only the free pages are inserted.\n\
         - bitmap-allocator 0.4 `BitAlloc256M` in a `spin::Mutex`; bit = page index in the region.\n\n\
         Memory is a `MAP_NORESERVE` anonymous mapping: only metadata (and zeroed pages) is ever touched, 64 GiB included.\n\n\
         {table}\n\
         ![ns per pair against memory size](bench.png)\n",
        date = date(),
        machine = machine(),
        batch_us = BATCH_TIME.as_micros(),
        secs = started.elapsed().as_secs_f64(),
    );
    println!("{table}");
    if let Some(dir) = std::path::Path::new(&md_path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&md_path, doc).expect("write the markdown table");
    match plot(&png_path, &S5_SIZES, &s5_cells) {
        Ok(()) => eprintln!("wrote {md_path} and {png_path}"),
        Err(e) => {
            eprintln!("plot failed: {e}");
            std::process::exit(1);
        }
    }
}
