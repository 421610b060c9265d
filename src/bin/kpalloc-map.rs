//! kpalloc-map: turns a `page_dump` text (a file, or stdin) into an SVG map
//! of memory: one band per region, one cell per group of pages, coloured by
//! the state most of its pages are in, with a legend and the stats.
//!
//!     kpalloc-map [DUMP] [-o map.svg]
//!
//! Lines before `kpalloc-dump` (boot messages on a serial log) are skipped.

use std::fmt::Write as _;
use std::io::Read;
use std::process::ExitCode;

const CELLS_PER_ROW: u64 = 256;
const MAX_ROWS: u64 = 48;
const CELL: u64 = 4;
const MARGIN: u64 = 16;

/// Page states in the dump, with their colours and legend names.
const STATES: [(char, &str, &str); 4] = [
    ('M', "#6c5ce7", "metadata"),
    ('F', "#dfe6e9", "free"),
    ('U', "#0984e3", "used"),
    ('S', "#e17055", "shared"),
];

struct Region {
    header: String,
    runs: Vec<(char, u64)>,
}

struct Dump {
    stats: String,
    regions: Vec<Region>,
}

fn parse(text: &str) -> Result<Dump, String> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .skip_while(|line| !line.starts_with("kpalloc-dump"));
    match lines.next() {
        Some("kpalloc-dump 1") => {}
        Some(other) => return Err(format!("unknown dump version: {other}")),
        None => return Err("no `kpalloc-dump` line found".into()),
    }
    let mut dump = Dump {
        stats: String::new(),
        regions: Vec::new(),
    };
    for line in lines {
        if line == "end" {
            return Ok(dump);
        } else if let Some(stats) = line.strip_prefix("stats ") {
            dump.stats = stats.to_string();
        } else if let Some(header) = line.strip_prefix("region ") {
            dump.regions.push(Region {
                header: header.to_string(),
                runs: Vec::new(),
            });
        } else if let Some(runs) = line.strip_prefix("runs ") {
            let region = dump.regions.last_mut().ok_or("`runs` before any `region`")?;
            for run in runs.split_whitespace() {
                let mut chars = run.chars();
                let state = chars.next().filter(|c| STATES.iter().any(|s| s.0 == *c));
                let pages = chars.as_str().parse::<u64>().ok();
                match (state, pages) {
                    (Some(state), Some(pages)) => region.runs.push((state, pages)),
                    _ => return Err(format!("bad run `{run}`")),
                }
            }
        } else if !line.is_empty() {
            return Err(format!("unexpected line `{line}`"));
        }
    }
    Err("the dump has no `end` line (cut short?)".into())
}

/// The state most pages of each cell are in, `pages_per_cell` pages a cell.
fn cells(runs: &[(char, u64)], pages_per_cell: u64) -> Vec<char> {
    let mut cells = Vec::new();
    let mut counts = [0u64; STATES.len()];
    let mut in_cell = 0;
    for &(state, pages) in runs {
        let index = STATES.iter().position(|s| s.0 == state).unwrap_or(0);
        let mut left = pages;
        while left > 0 {
            let take = left.min(pages_per_cell - in_cell);
            counts[index] += take;
            in_cell += take;
            left -= take;
            if in_cell == pages_per_cell {
                cells.push(majority(&counts));
                counts = [0; STATES.len()];
                in_cell = 0;
            }
        }
    }
    if in_cell > 0 {
        cells.push(majority(&counts));
    }
    cells
}

fn majority(counts: &[u64; STATES.len()]) -> char {
    let best = (0..STATES.len())
        .max_by_key(|&i| (counts[i], std::cmp::Reverse(i)))
        .unwrap_or(0);
    STATES[best].0
}

fn colour(state: char) -> &'static str {
    STATES.iter().find(|s| s.0 == state).map_or("#000", |s| s.1)
}

fn svg(dump: &Dump) -> String {
    let width = MARGIN * 2 + CELLS_PER_ROW * CELL;
    let mut body = String::new();
    let mut y = MARGIN;
    let _ = writeln!(
        body,
        r#"<text x="{MARGIN}" y="{}" class="title">kpalloc memory map</text>"#,
        y + 12
    );
    y += 22;
    let _ = writeln!(body, r#"<text x="{MARGIN}" y="{}">{}</text>"#, y + 10, dump.stats);
    y += 18;
    for (i, (state, _, name)) in STATES.iter().enumerate() {
        let x = MARGIN + i as u64 * 110;
        let _ = writeln!(
            body,
            r#"<rect x="{x}" y="{y}" width="12" height="12" fill="{}"/>"#,
            colour(*state)
        );
        let _ = writeln!(body, r#"<text x="{}" y="{}">{name}</text>"#, x + 16, y + 10);
    }
    y += 24;
    for region in &dump.regions {
        let pages: u64 = region.runs.iter().map(|run| run.1).sum();
        let pages_per_cell = pages.div_ceil(CELLS_PER_ROW * MAX_ROWS).max(1);
        let _ = writeln!(
            body,
            r#"<text x="{MARGIN}" y="{}">region {} ({pages} pages, {pages_per_cell} per cell)</text>"#,
            y + 10,
            region.header
        );
        y += 16;
        let cells = cells(&region.runs, pages_per_cell);
        // One rectangle per run of same-state cells within a row.
        for (row, row_cells) in cells.chunks(CELLS_PER_ROW as usize).enumerate() {
            let mut column = 0;
            for run in row_cells.chunk_by(|a, b| a == b) {
                let _ = writeln!(
                    body,
                    r#"<rect x="{}" y="{}" width="{}" height="{CELL}" fill="{}"/>"#,
                    MARGIN + column * CELL,
                    y + row as u64 * CELL,
                    run.len() as u64 * CELL,
                    colour(run[0])
                );
                column += run.len() as u64;
            }
        }
        y += (cells.len() as u64).div_ceil(CELLS_PER_ROW) * CELL + 14;
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"monospace\" font-size=\"11\">\n\
         <style>.title {{ font-size: 14px; font-weight: bold; }}</style>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n",
        y + MARGIN
    )
}

fn run() -> Result<(), String> {
    let mut input = None;
    let mut output = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-o" => output = Some(args.next().ok_or("-o needs a file name")?),
            "-h" | "--help" => {
                println!("usage: kpalloc-map [DUMP] [-o map.svg]  (DUMP defaults to stdin, output to stdout)");
                return Ok(());
            }
            _ => input = Some(arg),
        }
    }
    let text = match &input {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?,
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| e.to_string())?;
            text
        }
    };
    let picture = svg(&parse(&text)?);
    match output {
        Some(path) => std::fs::write(&path, picture).map_err(|e| format!("{path}: {e}")),
        None => {
            print!("{picture}");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kpalloc-map: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "boot noise\nkpalloc-dump 1\nstats total=10 free=5\nregion start=0x0 end=0xa000 pool=kernel\nruns M1 F5\nruns U3 S1\nend\n";

    #[test]
    fn a_dump_after_boot_noise_parses_into_regions_and_runs() {
        let dump = parse(DUMP).unwrap();
        assert_eq!(dump.stats, "total=10 free=5");
        assert_eq!(dump.regions.len(), 1);
        assert_eq!(dump.regions[0].runs, [('M', 1), ('F', 5), ('U', 3), ('S', 1)]);
    }

    #[test]
    fn cells_take_the_state_most_of_their_pages_are_in() {
        assert_eq!(
            cells(&[('M', 1), ('F', 5), ('U', 3), ('S', 1)], 2),
            ['M', 'F', 'F', 'U', 'U']
        );
        assert_eq!(cells(&[('F', 3)], 1), ['F', 'F', 'F']);
    }

    #[test]
    fn cut_or_foreign_text_is_refused() {
        assert!(parse("kpalloc-dump 1\nstats x\n").is_err());
        assert!(parse("hello").is_err());
        assert!(parse("kpalloc-dump 1\nruns F1\nend").is_err());
        assert!(parse("kpalloc-dump 1\nregion a\nruns X1\nend").is_err());
    }

    #[test]
    fn the_svg_has_one_rect_per_run_of_cells_plus_legend_and_background() {
        let picture = svg(&parse(DUMP).unwrap());
        assert!(picture.starts_with("<svg"));
        // Cells M F F F F F U U U S: four runs.
        assert_eq!(picture.matches("<rect").count(), 1 + STATES.len() + 4);
        assert!(picture.contains(r##"width="20" height="4" fill="#dfe6e9""##));
    }
}
