//! `tripline summarize FILE…`: enrich trip files offline, one TripSummary JSON per line.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use tripline_enrich::Enricher;
use tripline_enrich::batch::summarize_records;
use tripline_model::VehicleId;
use tripline_model::tripfile::{FileRecord, RecordError, TripFileFormat, parse_trip_file};

use crate::Failure;

/// Most record errors printed one by one; the rest are counted.
const MAX_ERRORS_SHOWN: usize = 20;

/// Reads trip files: every readable record (tagged with its file's index) and the records
/// skipped. A GPX file needs `gpx_vehicle`.
pub(crate) fn read_trip_files(
    files: &[PathBuf],
    gpx_vehicle: Option<&str>,
) -> Result<(Vec<FileRecord>, Vec<RecordError>), Failure> {
    let gpx_vehicle =
        gpx_vehicle.map(VehicleId::parse).transpose().map_err(|e| Failure::Usage(format!("--vehicle: {e}")))?;
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for (source, path) in files.iter().enumerate() {
        let format = TripFileFormat::from_path(path).ok_or_else(|| {
            Failure::Usage(format!(
                "{}: unknown trip file type (expected .csv, .jsonl, .ndjson or .gpx)",
                path.display()
            ))
        })?;
        if format == TripFileFormat::Gpx && gpx_vehicle.is_none() {
            return Err(Failure::Usage(format!("{}: a GPX file needs --vehicle", path.display())));
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .map_err(Failure::Runtime)?;
        let parsed =
            parse_trip_file(format, &text, gpx_vehicle.as_ref()).with_context(|| path.display().to_string())?;
        records.extend(parsed.records.into_iter().map(|mut r| {
            r.source = source;
            r
        }));
        errors.extend(parsed.errors.into_iter().map(|mut e| {
            e.source = source;
            e
        }));
    }
    Ok((records, errors))
}

/// Prints skipped records on stderr with file and line: the first few, then a count.
pub(crate) fn report_skipped(files: &[PathBuf], errors: &[RecordError]) {
    for error in errors.iter().take(MAX_ERRORS_SHOWN) {
        eprintln!("tripline: {}:{}: skipped: {}", files[error.source].display(), error.line, error.detail);
    }
    if errors.len() > MAX_ERRORS_SHOWN {
        eprintln!("tripline: … and {} more skipped records", errors.len() - MAX_ERRORS_SHOWN);
    }
}

pub(crate) fn run(files: &[PathBuf], gpx_vehicle: Option<&str>, engine: &Enricher) -> Result<(), Failure> {
    let (records, mut errors) = read_trip_files(files, gpx_vehicle)?;
    let output = summarize_records(records, engine);
    errors.extend(output.errors);

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for report in &output.reports {
        let line = serde_json::to_string(&report.summary).context("encode summary").map_err(Failure::Runtime)?;
        writeln!(out, "{line}").context("write stdout").map_err(Failure::Runtime)?;
    }
    out.flush().context("write stdout").map_err(Failure::Runtime)?;

    report_skipped(files, &errors);
    for (reason, count) in &output.rejected {
        eprintln!("tripline: {count} points dropped: {reason}");
    }
    if output.duplicates > 0 {
        eprintln!("tripline: {} duplicate points ignored", output.duplicates);
    }
    Ok(())
}
