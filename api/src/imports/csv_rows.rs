//! The CSV formats of the importers: header checks and row parsing, kept free of I/O so
//! that property tests can feed them any input.
//!
//! Every format reads raw byte records, so a row that is not UTF-8 becomes an invalid
//! row instead of stopping the file. A row error is a sentence that names the column and
//! the value, except for e-mail addresses and phone numbers, which are personal data.

use std::collections::HashMap;
use std::io::Read;
use std::ops::ControlFlow;

use chrono::NaiveDate;
use csv::ByteRecord;
use referrals_domain::values::{EmailAddress, Hours, PhoneNumber};
use uuid::Uuid;

/// Maximum length of a back-office worker id, as the hire command accepts it.
pub const MAX_WORKER_ID_CHARS: usize = 100;

/// Maximum length of a payroll reference, as the mark-paid command accepts it.
pub const MAX_REFERENCE_CHARS: usize = 100;

/// Maximum length of a value quoted in a row error. Longer values end in an ellipsis.
const MAX_QUOTED_CHARS: usize = 40;

/// A header that does not fit the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The body has no record at all.
    #[error("the file is empty; send a header line such as {expected}")]
    Missing {
        /// The header lines the format accepts.
        expected: String,
    },
    /// The first record lacks required columns, or names one twice.
    #[error("{problem}; the header line must name the columns {expected} (in any order, other columns are ignored)")]
    Invalid {
        /// Description of the header problem.
        problem: String,
        /// The header lines the format accepts.
        expected: String,
    },
}

/// One CSV format: how to read its header and its rows.
pub trait CsvFormat: Send + Sync + 'static {
    /// Where the columns are, and anything else the header decides.
    type Columns: Clone + Send + 'static;
    /// A parsed row.
    type Row: Send + 'static;

    /// Finds the format's columns in the header record.
    ///
    /// # Errors
    /// Returns a [`HeaderError`] when a required column is missing or named twice.
    fn columns(&self, header: &ByteRecord) -> Result<Self::Columns, HeaderError>;

    /// Parses one data record.
    ///
    /// # Errors
    /// Returns a sentence naming the column and what is wrong with it.
    fn parse_row(&self, columns: &Self::Columns, record: &ByteRecord) -> Result<Self::Row, String>;
}

/// One data record: its position in the file and the parse result.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRow<R> {
    /// Record number in the file, counting the header as 1. It is the line number
    /// unless a quoted field above spans lines.
    pub line: u64,
    /// The row, or why it is invalid.
    pub row: Result<R, String>,
}

/// A failure that stops reading a whole file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The header does not fit the format.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The body could not be read, for example because the upload was cut off.
    #[error("the request body could not be read: {0}")]
    Io(std::io::Error),
}

/// Reads `input` as CSV in `format`: calls `on_header` once with the columns, then
/// `on_row` for every data record, until the input ends or a callback breaks.
///
/// Quoted fields, CRLF or LF line ends and a leading UTF-8 byte order mark are
/// accepted. Records may have more or fewer fields than the header; a missing field
/// makes that row invalid.
///
/// # Errors
/// [`ReadError::Header`] when the header does not fit, [`ReadError::Io`] when `input`
/// fails.
pub fn read_csv<F: CsvFormat, R: Read>(
    format: &F,
    input: R,
    on_header: impl FnOnce(&F::Columns) -> ControlFlow<()>,
    mut on_row: impl FnMut(ParsedRow<F::Row>) -> ControlFlow<()>,
) -> Result<(), ReadError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input);
    let mut record = ByteRecord::new();

    if !next_record(&mut reader, &mut record)? {
        return Err(HeaderError::Missing {
            expected: format_expected(format),
        }
        .into());
    }
    let header = strip_byte_order_mark(&record);
    let columns = format.columns(&header)?;
    if on_header(&columns).is_break() {
        return Ok(());
    }

    // Counted here: the reader's own line numbers stay at 1 for CRLF files (csv 1.4).
    let mut line = 1;
    while next_record(&mut reader, &mut record)? {
        line += 1;
        let row = format.parse_row(&columns, &record);
        if on_row(ParsedRow { line, row }).is_break() {
            break;
        }
    }
    Ok(())
}

/// The expected header lines of a format, taken from the error for an empty header.
fn format_expected<F: CsvFormat>(format: &F) -> String {
    match format.columns(&ByteRecord::new()) {
        Err(HeaderError::Invalid { expected, .. } | HeaderError::Missing { expected }) => expected,
        Ok(_) => String::new(),
    }
}

fn next_record<R: Read>(
    reader: &mut csv::Reader<R>,
    record: &mut ByteRecord,
) -> Result<bool, ReadError> {
    reader
        .read_byte_record(record)
        .map_err(|error| match error.into_kind() {
            csv::ErrorKind::Io(io) => ReadError::Io(io),
            // With byte records and flexible lengths the reader reports nothing else;
            // this keeps a future csv release from turning into a panic.
            other => ReadError::Io(std::io::Error::other(format!("{other:?}"))),
        })
}

/// Removes a UTF-8 byte order mark from the first field. Spreadsheet programs write one
/// when they save CSV as UTF-8.
fn strip_byte_order_mark(header: &ByteRecord) -> ByteRecord {
    header
        .iter()
        .enumerate()
        .map(|(index, field)| match index {
            0 => field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field),
            _ => field,
        })
        .collect()
}

/// Finds each of `expected` in the header (trimmed, case-insensitive), or names the
/// missing and repeated ones.
fn find_columns<const N: usize>(
    header: &ByteRecord,
    expected: [&'static str; N],
) -> Result<[usize; N], String> {
    let mut positions: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, field) in header.iter().enumerate() {
        let Ok(name) = std::str::from_utf8(field) else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if let Some(column) = expected.iter().find(|column| **column == name) {
            positions.entry(column).or_default().push(index);
        }
    }

    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|column| !positions.contains_key(column))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the header lacks the column {}",
            missing.join(", ")
        ));
    }
    let repeated: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|column| positions[column].len() > 1)
        .collect();
    if !repeated.is_empty() {
        return Err(format!(
            "the header names {} more than once",
            repeated.join(", ")
        ));
    }
    Ok(expected.map(|column| positions[column][0]))
}

/// The text of field `index`, trimmed; names the column when it is absent or not UTF-8.
fn field<'r>(record: &'r ByteRecord, index: usize, column: &str) -> Result<&'r str, String> {
    let bytes = record
        .get(index)
        .ok_or_else(|| format!("{column} is missing; the row has fewer fields than the header"))?;
    std::str::from_utf8(bytes)
        .map(str::trim)
        .map_err(|_| format!("{column} is not valid UTF-8 text; save the file as UTF-8"))
}

/// Quotes a value for a row error, cut to a readable length.
fn quote(value: &str) -> String {
    if value.chars().count() <= MAX_QUOTED_CHARS {
        return format!("\"{value}\"");
    }
    let cut: String = value.chars().take(MAX_QUOTED_CHARS).collect();
    format!("\"{cut}…\"")
}

fn parse_date(record: &ByteRecord, index: usize, column: &str) -> Result<NaiveDate, String> {
    let text = field(record, index, column)?;
    if text.is_empty() {
        return Err(format!(
            "{column} is empty; enter a date such as 2026-11-27"
        ));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        format!(
            "{column} {} is not a date; use the form YYYY-MM-DD, such as 2026-11-27",
            quote(text)
        )
    })
}

fn parse_hours(record: &ByteRecord, index: usize, column: &str) -> Result<Hours, String> {
    let text = field(record, index, column)?;
    Hours::parse(text).map_err(|error| format!("{column} {} {}", quote(text), error.message))
}

fn parse_text(
    record: &ByteRecord,
    index: usize,
    column: &str,
    max_chars: usize,
) -> Result<String, String> {
    let text = field(record, index, column)?;
    if text.is_empty() {
        return Err(format!("{column} is empty"));
    }
    if text.chars().count() > max_chars {
        return Err(format!(
            "{column} {} is longer than {max_chars} characters",
            quote(text)
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{column} contains a control character"));
    }
    Ok(text.to_owned())
}

/// The two shapes of a timesheet file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimesheetShape {
    /// `external_worker_id,week_ending,hours`: hours of one work week.
    Weekly,
    /// `external_worker_id,as_of,total_hours`: hours accrued up to a date.
    Cumulative,
}

impl TimesheetShape {
    /// The name stored with an import and shown to clients.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Weekly => "weekly",
            Self::Cumulative => "cumulative",
        }
    }

    /// Parses a stored name.
    pub fn parse(stored: &str) -> Option<Self> {
        match stored {
            "weekly" => Some(Self::Weekly),
            "cumulative" => Some(Self::Cumulative),
            _ => None,
        }
    }

    fn column_names(self) -> [&'static str; 3] {
        match self {
            Self::Weekly => ["external_worker_id", "week_ending", "hours"],
            Self::Cumulative => ["external_worker_id", "as_of", "total_hours"],
        }
    }
}

/// A timesheet file, weekly or cumulative, told apart by its header.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimesheetFormat;

/// The shape of a timesheet file and the positions of its three columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimesheetColumns {
    /// Weekly or cumulative.
    pub shape: TimesheetShape,
    positions: [usize; 3],
}

/// One timesheet row. `date` and `hours` are the week's end and hours of a weekly file,
/// or the date and total of a cumulative file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimesheetRow {
    /// The worker's id in the agency's back office.
    pub external_worker_id: String,
    /// `week_ending` or `as_of`.
    pub date: NaiveDate,
    /// `hours` or `total_hours`.
    pub hours: Hours,
}

const TIMESHEET_EXPECTED: &str =
    "external_worker_id,week_ending,hours (weekly) or external_worker_id,as_of,total_hours (cumulative)";

impl CsvFormat for TimesheetFormat {
    type Columns = TimesheetColumns;
    type Row = TimesheetRow;

    fn columns(&self, header: &ByteRecord) -> Result<TimesheetColumns, HeaderError> {
        let weekly = find_columns(header, TimesheetShape::Weekly.column_names());
        let cumulative = find_columns(header, TimesheetShape::Cumulative.column_names());
        let invalid = |problem: String| HeaderError::Invalid {
            problem,
            expected: TIMESHEET_EXPECTED.to_owned(),
        };
        match (weekly, cumulative) {
            (Ok(positions), Err(_)) => Ok(TimesheetColumns {
                shape: TimesheetShape::Weekly,
                positions,
            }),
            (Err(_), Ok(positions)) => Ok(TimesheetColumns {
                shape: TimesheetShape::Cumulative,
                positions,
            }),
            (Ok(_), Ok(_)) => Err(invalid(
                "the header has the columns of both the weekly and the cumulative shape; send one shape per file"
                    .to_owned(),
            )),
            (Err(weekly), Err(cumulative)) => Err(invalid(format!(
                "the header fits neither shape: for weekly, {weekly}; for cumulative, {cumulative}"
            ))),
        }
    }

    fn parse_row(
        &self,
        columns: &TimesheetColumns,
        record: &ByteRecord,
    ) -> Result<TimesheetRow, String> {
        let [worker, date, hours] = columns.positions;
        let [worker_column, date_column, hours_column] = columns.shape.column_names();
        Ok(TimesheetRow {
            external_worker_id: parse_text(record, worker, worker_column, MAX_WORKER_ID_CHARS)?,
            date: parse_date(record, date, date_column)?,
            hours: parse_hours(record, hours, hours_column)?,
        })
    }
}

/// A list of candidates the agency already had contact with.
#[derive(Debug, Clone, Copy)]
pub struct KnownCandidateFormat {
    /// Today's date; a later contact date is invalid.
    pub today: NaiveDate,
}

/// Positions of `email`, `phone` and `last_contact_on`.
#[derive(Debug, Clone, Copy)]
pub struct KnownCandidateColumns([usize; 3]);

/// One known candidate: an e-mail address, a phone number or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownCandidateRow {
    /// The normalized e-mail address.
    pub email: Option<EmailAddress>,
    /// The normalized phone number.
    pub phone: Option<PhoneNumber>,
    /// The last day the agency was in contact with the person.
    pub last_contact_on: NaiveDate,
}

impl CsvFormat for KnownCandidateFormat {
    type Columns = KnownCandidateColumns;
    type Row = KnownCandidateRow;

    fn columns(&self, header: &ByteRecord) -> Result<KnownCandidateColumns, HeaderError> {
        find_columns(header, ["email", "phone", "last_contact_on"])
            .map(KnownCandidateColumns)
            .map_err(|problem| HeaderError::Invalid {
                problem,
                expected: "email,phone,last_contact_on".to_owned(),
            })
    }

    fn parse_row(
        &self,
        columns: &KnownCandidateColumns,
        record: &ByteRecord,
    ) -> Result<KnownCandidateRow, String> {
        let [email, phone, date] = columns.0;
        // The messages of these parsers never quote the address or number, so the row
        // error stays free of personal data.
        let email = Some(field(record, email, "email")?)
            .filter(|text| !text.is_empty())
            .map(EmailAddress::parse)
            .transpose()
            .map_err(|error| format!("email {}", error.message))?;
        let phone = Some(field(record, phone, "phone")?)
            .filter(|text| !text.is_empty())
            .map(PhoneNumber::parse)
            .transpose()
            .map_err(|error| format!("phone {}", error.message))?;
        if email.is_none() && phone.is_none() {
            return Err("email and phone are both empty; give at least one".to_owned());
        }
        let last_contact_on = parse_date(record, date, "last_contact_on")?;
        if last_contact_on > self.today {
            return Err(format!(
                "last_contact_on {last_contact_on} is in the future; give the day of the last contact"
            ));
        }
        Ok(KnownCandidateRow {
            email,
            phone,
            last_contact_on,
        })
    }
}

/// A payroll file of paid payouts.
#[derive(Debug, Clone, Copy, Default)]
pub struct PaidFormat;

/// Positions of `payout_id`, `paid_on` and `reference`.
#[derive(Debug, Clone, Copy)]
pub struct PaidColumns([usize; 3]);

/// One payment that payroll made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidRow {
    /// The payout paid.
    pub payout_id: Uuid,
    /// The day of payment.
    pub paid_on: NaiveDate,
    /// Payroll's reference for the payment.
    pub reference: String,
}

impl CsvFormat for PaidFormat {
    type Columns = PaidColumns;
    type Row = PaidRow;

    fn columns(&self, header: &ByteRecord) -> Result<PaidColumns, HeaderError> {
        find_columns(header, ["payout_id", "paid_on", "reference"])
            .map(PaidColumns)
            .map_err(|problem| HeaderError::Invalid {
                problem,
                expected: "payout_id,paid_on,reference".to_owned(),
            })
    }

    fn parse_row(&self, columns: &PaidColumns, record: &ByteRecord) -> Result<PaidRow, String> {
        let [payout, date, reference] = columns.0;
        let payout_text = field(record, payout, "payout_id")?;
        let payout_id = Uuid::parse_str(payout_text).map_err(|_| {
            format!(
                "payout_id {} is not a payout id; copy the payout_id column of the export",
                quote(payout_text)
            )
        })?;
        Ok(PaidRow {
            payout_id,
            paid_on: parse_date(record, date, "paid_on")?,
            reference: parse_text(record, reference, "reference", MAX_REFERENCE_CHARS)?,
        })
    }
}

#[cfg(test)]
mod tests;
