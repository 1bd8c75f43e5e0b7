//! CSV imports: the file formats, the streamed upload reader and the timesheet worker.

pub mod csv_rows;
pub mod timesheets;
pub mod upload;
