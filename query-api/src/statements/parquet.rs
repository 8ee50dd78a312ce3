//! Statements as Parquet for data warehouses: the rows of [`super::table`] (with `usage_period`
//! and `model_version`) as one row group, every column optional (null where the CSV cell is
//! empty), text as UTF-8 byte arrays, mJ and counts as INT64, kWh and grams as DOUBLE. Written
//! with the parquet crate's low-level column writer: no arrow, no compression codecs.

use std::sync::Arc;

use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use super::table::{Cell, Kind, COLUMNS};
use crate::error::ApiError;

/// The Parquet schema of the table's columns.
fn schema() -> String {
    let fields: String = COLUMNS
        .iter()
        .map(|(name, kind)| match kind {
            Kind::Text => format!("optional binary {name} (UTF8);"),
            Kind::Int => format!("optional int64 {name};"),
            Kind::Float => format!("optional double {name};"),
        })
        .collect();
    format!("message wattprint_statement_lines {{ {fields} }}")
}

/// Renders table rows (of one or many statements) as a Parquet file.
pub fn render_rows(rows: &[Vec<Cell>]) -> Result<Vec<u8>, ApiError> {
    write(rows).map_err(|e| ApiError::Internal(format!("rendering statements as Parquet: {e}")))
}

fn write(rows: &[Vec<Cell>]) -> Result<Vec<u8>, parquet::errors::ParquetError> {
    use parquet::errors::ParquetError::General;
    let schema = Arc::new(parse_message_type(&schema())?);
    let props = Arc::new(WriterProperties::builder().build());
    let mut file = SerializedFileWriter::new(Vec::new(), schema, props)?;
    let mut group = file.next_row_group()?;
    for (c, (name, kind)) in COLUMNS.iter().enumerate() {
        let mut column = group
            .next_column()?
            .ok_or_else(|| General(format!("no column {name} in the schema")))?;
        let cells = rows.iter().map(|r| &r[c]);
        let defined: Vec<i16> = cells.clone().map(|x| i16::from(*x != Cell::Null)).collect();
        let w = (Some(defined.as_slice()), None);
        match kind {
            Kind::Text => {
                let v = values(cells, name, |x| match x {
                    Cell::Text(s) => Some(ByteArray::from(s.as_bytes().to_vec())),
                    _ => None,
                })?;
                column.typed::<ByteArrayType>().write_batch(&v, w.0, w.1)?;
            }
            Kind::Int => {
                let v = values(cells, name, |x| match x {
                    Cell::Int(i) => Some(*i),
                    _ => None,
                })?;
                column.typed::<Int64Type>().write_batch(&v, w.0, w.1)?;
            }
            Kind::Float => {
                let v = values(cells, name, |x| match x {
                    Cell::Float(f) => Some(*f),
                    _ => None,
                })?;
                column.typed::<DoubleType>().write_batch(&v, w.0, w.1)?;
            }
        }
        column.close()?;
    }
    group.close()?;
    file.into_inner()
}

/// The non-null values of a column, each picked by `pick`; a cell of another kind is an error.
fn values<'a, T>(
    cells: impl Iterator<Item = &'a Cell>,
    name: &str,
    pick: impl Fn(&Cell) -> Option<T>,
) -> Result<Vec<T>, parquet::errors::ParquetError> {
    cells
        .filter(|x| **x != Cell::Null)
        .map(|x| {
            pick(x).ok_or_else(|| {
                parquet::errors::ParquetError::General(format!(
                    "column {name} holds a value of another kind: {x:?}"
                ))
            })
        })
        .collect()
}
