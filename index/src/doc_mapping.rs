//! From a stored trip to its Tantivy document: which fields exist, how each is indexed, and why.

use tantivy::TantivyDocument;
use tantivy::schema::{FAST, Field, FieldType, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions};
use tripline_model::{EventKind, TenantId, TripId, TripStatus, VehicleId};
use tripline_store::TripRecord;

use crate::{IndexError, IndexResult};

/// The schema's fields, looked up once.
#[derive(Clone, Copy, Debug)]
pub struct Fields {
    /// `tenant\u{1f}vehicle\u{1f}trip`: the unique key upserts delete by.
    pub key: Field,
    /// The tenant (every query filters on it).
    pub tenant: Field,
    /// The vehicle id (filter, stats by vehicle).
    pub vehicle_id: Field,
    /// `active` or `completed`.
    pub status: Field,
    /// Start, Unix ms (range, sort, day buckets).
    pub start_ms: Field,
    /// End, Unix ms (range).
    pub end_ms: Field,
    /// Score × 1000, as an integer (range, sort: exact, no float equality).
    pub score_milli: Field,
    /// Distance in metres (range, sort).
    pub distance_m: Field,
    /// Event kinds the trip has at least one of (filter, stats by kind).
    pub event_kind: Field,
    /// Count per event kind: `events_<kind>` (stats).
    pub event_counts: [Field; 4],
    /// Region names (filter, stats by region).
    pub region: Field,
    /// Geohash cells passed, every prefix of length 2–6 (bbox).
    pub cell: Field,
    /// Free text: vehicle id, region names, event kinds.
    pub text: Field,
    /// Hash of the key: the tie-breaker of every sort order, so paging is exact.
    pub tiebreak: Field,
    /// The summary as JSON, returned by searches without touching the write store.
    pub summary: Field,
}

/// The schema. Only what a query looks up by term is indexed, and no field keeps what no query
/// reads: term filters match without scores (searches order by fast fields), so no field norms,
/// frequencies or positions; ranges run on fast fields (tantivy's range query uses the fast
/// column of a fast field whether or not the field is also indexed); only what stats group or
/// sum by, sorts and ranges read is fast. Each indexed field costs every commit a term
/// dictionary, and each fast text field a dictionary of its own, so the live indexer's commit
/// time follows their number.
pub(crate) fn schema() -> Schema {
    let mut b = Schema::builder();
    b.add_text_field("key", keyword());
    b.add_text_field("tenant", keyword());
    b.add_text_field("vehicle_id", keyword() | FAST);
    b.add_text_field("status", keyword());
    b.add_i64_field("start_ms", FAST);
    b.add_i64_field("end_ms", FAST);
    b.add_i64_field("score_milli", FAST);
    b.add_i64_field("distance_m", FAST);
    b.add_text_field("event_kind", keyword());
    for kind in EventKind::ALL {
        b.add_u64_field(&format!("events_{}", kind.as_str()), FAST);
    }
    b.add_text_field("region", keyword() | FAST);
    b.add_text_field("cell", keyword());
    b.add_text_field("text", words());
    b.add_u64_field("tiebreak", FAST);
    b.add_text_field("summary", STORED);
    b.build()
}

/// Whether an index built with `existing` (by this version or an earlier one) serves this
/// version: every field of [`schema`] is there with the same type, and fast, stored and indexed
/// (with the same tokenizer) where this version's is; it may keep more than this version needs.
/// Otherwise, what is missing.
pub(crate) fn serves(existing: &Schema) -> Result<(), String> {
    for (_, wanted) in schema().fields() {
        let name = wanted.name();
        let Ok(field) = existing.get_field(name) else { return Err(format!("it has no field {name}")) };
        let entry = existing.get_field_entry(field);
        let (have, want) = (entry.field_type(), wanted.field_type());
        let same = have.value_type() == want.value_type()
            && (!want.is_fast() || have.is_fast())
            && (!wanted.is_stored() || entry.is_stored())
            && (!want.is_indexed() || tokenizer(have) == tokenizer(want));
        if !same {
            return Err(format!("its field {name} is {have:?}, this version needs {want:?}"));
        }
    }
    Ok(())
}

/// How a field's text becomes terms (`None`: not indexed; `Some("")`: not text).
fn tokenizer(field: &FieldType) -> Option<&str> {
    match field {
        FieldType::Str(options) => options.get_indexing_options().map(|i| i.tokenizer()),
        other => other.is_indexed().then_some(""),
    }
}

/// A field matched whole (identifiers, codes, names).
fn keyword() -> TextOptions {
    indexed("raw")
}

/// A field matched word by word (the free-text field).
fn words() -> TextOptions {
    indexed("default")
}

fn indexed(tokenizer: &str) -> TextOptions {
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(tokenizer)
        .set_index_option(IndexRecordOption::Basic)
        .set_fieldnorms(false);
    TextOptions::default().set_indexing_options(indexing)
}

impl Fields {
    pub(crate) fn of(schema: &Schema) -> IndexResult<Fields> {
        let field = |name: &str| {
            schema.get_field(name).map_err(|_| IndexError::Tantivy {
                detail: format!("the index has no field {name}: built by another version?"),
            })
        };
        let mut event_counts = [field("tenant")?; 4];
        for (slot, kind) in event_counts.iter_mut().zip(EventKind::ALL) {
            *slot = field(&format!("events_{}", kind.as_str()))?;
        }
        Ok(Fields {
            key: field("key")?,
            tenant: field("tenant")?,
            vehicle_id: field("vehicle_id")?,
            status: field("status")?,
            start_ms: field("start_ms")?,
            end_ms: field("end_ms")?,
            score_milli: field("score_milli")?,
            distance_m: field("distance_m")?,
            event_kind: field("event_kind")?,
            event_counts,
            region: field("region")?,
            cell: field("cell")?,
            text: field("text")?,
            tiebreak: field("tiebreak")?,
            summary: field("summary")?,
        })
    }
}

/// The unique key of a trip's document.
pub fn trip_key(tenant: &TenantId, vehicle: &VehicleId, trip_id: &TripId) -> String {
    format!("{tenant}\u{1f}{vehicle}\u{1f}{trip_id}")
}

/// The sort tie-breaker of a key: a stable 64-bit hash.
pub(crate) fn tiebreak(key: &str) -> u64 {
    tripline_model::hash::fnv1a64(key.as_bytes())
}

/// Score as the integer the index sorts and filters on.
pub(crate) fn score_milli(score: f64) -> i64 {
    (score * 1000.0).round() as i64
}

/// Distance as the integer the index sorts and filters on.
pub(crate) fn distance_m(distance_km: f64) -> i64 {
    (distance_km * 1000.0).round() as i64
}

/// The document of a trip.
pub fn document(fields: &Fields, trip: &TripRecord) -> IndexResult<TantivyDocument> {
    let s = &trip.summary;
    let key = trip_key(&trip.tenant, &s.vehicle_id, &s.trip_id);
    let mut doc = TantivyDocument::default();
    doc.add_text(fields.key, &key);
    doc.add_text(fields.tenant, trip.tenant.as_str());
    doc.add_text(fields.vehicle_id, s.vehicle_id.as_str());
    doc.add_text(
        fields.status,
        match s.status {
            TripStatus::Active => "active",
            TripStatus::Completed => "completed",
        },
    );
    doc.add_i64(fields.start_ms, s.start_time.timestamp_millis());
    doc.add_i64(fields.end_ms, s.end_time.timestamp_millis());
    doc.add_i64(fields.score_milli, score_milli(s.score));
    doc.add_i64(fields.distance_m, distance_m(s.distance_km));
    let mut text = vec![s.vehicle_id.as_str().to_owned()];
    for (kind, field) in EventKind::ALL.into_iter().zip(fields.event_counts) {
        let count = s.events.get(kind);
        doc.add_u64(field, u64::from(count));
        if count > 0 {
            doc.add_text(fields.event_kind, kind.as_str());
            text.push(kind.as_str().replace('_', " "));
        }
    }
    for region in &s.regions {
        doc.add_text(fields.region, region);
        text.push(region.clone());
    }
    let mut prefixes = std::collections::BTreeSet::new();
    for cell in &trip.cells {
        for len in 2..=cell.len() {
            if let Some(prefix) = cell.get(..len) {
                prefixes.insert(prefix);
            }
        }
    }
    for prefix in prefixes {
        doc.add_text(fields.cell, prefix);
    }
    doc.add_text(fields.text, text.join(" "));
    doc.add_u64(fields.tiebreak, tiebreak(&key));
    let summary = serde_json::to_string(s).map_err(|e| IndexError::Corrupt { detail: e.to_string() })?;
    doc.add_text(fields.summary, summary);
    Ok(doc)
}
