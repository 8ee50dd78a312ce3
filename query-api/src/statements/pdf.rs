//! A statement as a PDF a finance team files: tenant, period, status, issue date, statement id
//! and content hash; a summary table; a chart of the month; per-instance, per-workload and
//! adjustment tables; methodology and data-source notes. A4, the PDF standard fonts (nothing
//! embedded, no network), rendered with `printpdf`. Every number is the JSON's, formatted by
//! [`kwh`], [`kg`] and plain integers for millijoules, so a reader of the text can check it.

use printpdf::{
    BuiltinFont, Color, Line, LinePoint, Mm, Op, PdfDocument, PdfFontHandle, PdfPage,
    PdfSaveOptions, Point, Polygon, PolygonRing, Pt, Rgb, TextItem,
};
use wattprint_api_types::{StatementAmounts, StatementView};

/// Energy as kWh: 3 decimals, 6 below 1 kWh (a small tenant's month is not "0.000").
pub fn kwh(v: f64) -> String {
    fixed(v)
}

/// Grams as kilograms: 3 decimals, 6 below 1 kg (to the milligram).
pub fn kg(grams: f64) -> String {
    fixed(grams / 1000.0)
}

fn fixed(v: f64) -> String {
    if v.abs() < 1.0 {
        format!("{v:.6}")
    } else {
        format!("{v:.3}")
    }
}

const PAGE_W: f32 = 210.0;
const PAGE_H: f32 = 297.0;
const MARGIN: f32 = 18.0;

/// Pages under construction: text and lines from the top down, a new page when one is full.
struct Pages {
    done: Vec<PdfPage>,
    ops: Vec<Op>,
    y: f32,
}

impl Pages {
    fn new() -> Self {
        Self {
            done: Vec::new(),
            ops: Vec::new(),
            y: PAGE_H - MARGIN,
        }
    }

    /// Moves down `h` mm, first starting a page if fewer than `h` mm are left.
    fn down(&mut self, h: f32) {
        if self.y - h < MARGIN {
            let ops = std::mem::take(&mut self.ops);
            self.done.push(PdfPage::new(Mm(PAGE_W), Mm(PAGE_H), ops));
            self.y = PAGE_H - MARGIN;
        }
        self.y -= h;
    }

    fn text_at(&mut self, x: f32, y: f32, size: f32, bold: bool, text: &str) {
        let font = if bold {
            BuiltinFont::HelveticaBold
        } else {
            BuiltinFont::Helvetica
        };
        self.ops.extend([
            Op::StartTextSection,
            Op::SetTextCursor {
                pos: Point::new(Mm(x), Mm(y)),
            },
            Op::SetFont {
                font: PdfFontHandle::Builtin(font),
                size: Pt(size),
            },
            Op::ShowText {
                items: vec![TextItem::Text(text.to_owned())],
            },
            Op::EndTextSection,
        ]);
    }

    /// One line of text at the left margin (+ `indent`).
    fn line(&mut self, size: f32, bold: bool, text: &str) {
        self.down(size * 0.5 + 1.5);
        let y = self.y;
        self.text_at(MARGIN, y, size, bold, text);
    }

    /// One table row: cells at the given x offsets from the margin.
    fn row(&mut self, cols: &[f32], cells: &[String], bold: bool) {
        self.down(5.0);
        let y = self.y;
        for (x, cell) in cols.iter().zip(cells) {
            self.text_at(MARGIN + x, y, 8.5, bold, cell);
        }
    }

    fn rule(&mut self) {
        self.down(2.0);
        let y = self.y;
        self.ops.extend([
            Op::SetOutlineThickness { pt: Pt(0.5) },
            Op::DrawLine {
                line: Line {
                    points: vec![point(MARGIN, y), point(PAGE_W - MARGIN, y)],
                    is_closed: false,
                },
            },
        ]);
    }

    fn finish(mut self) -> Vec<PdfPage> {
        let ops = std::mem::take(&mut self.ops);
        self.done.push(PdfPage::new(Mm(PAGE_W), Mm(PAGE_H), ops));
        self.done
    }
}

fn point(x_mm: f32, y_mm: f32) -> LinePoint {
    LinePoint {
        p: Point::new(Mm(x_mm), Mm(y_mm)),
        bezier: false,
    }
}

fn location(a: &StatementAmounts) -> String {
    a.location_co2e_g.map_or_else(|| "n/a".to_owned(), kg)
}

/// Renders `view` as PDF bytes.
pub fn render(view: &StatementView) -> Vec<u8> {
    let mut p = Pages::new();
    p.line(16.0, true, "Wattprint monthly carbon statement");
    p.down(2.0);
    for (label, value) in header(view) {
        p.line(9.0, false, &format!("{label}: {value}"));
    }
    p.rule();
    summary(&mut p, view);
    chart(&mut p, view);
    tables(&mut p, view);
    potential(&mut p, view);
    market(&mut p, view);
    notes(&mut p, view);
    let mut doc = PdfDocument::new(&format!(
        "Wattprint statement {} {}",
        view.tenant, view.period
    ));
    doc.with_pages(p.finish())
        .save(&PdfSaveOptions::default(), &mut Vec::new())
}

fn header(view: &StatementView) -> Vec<(&'static str, String)> {
    let hash = view
        .content_sha256
        .as_deref()
        .unwrap_or("none (preliminary)");
    vec![
        ("Tenant", view.tenant.clone()),
        (
            "Period",
            format!("{} ({} to {}, UTC)", view.period, view.from, view.to),
        ),
        ("Status", view.status.clone()),
        (
            "Issued",
            view.issued_at
                .clone()
                .unwrap_or_else(|| "not yet: recomputed on every read".into()),
        ),
        ("Computed", view.computed_at.clone()),
        ("Statement id", view.statement_id.clone()),
        ("Content SHA-256", hash.to_owned()),
        ("Model", view.model_version.clone()),
    ]
}

fn summary(p: &mut Pages, view: &StatementView) {
    let t = &view.totals;
    p.line(12.0, true, "Summary");
    let market = match (view.market_based.co2e_g, view.market_based.status.as_str()) {
        (Some(g), _) => format!("{} kgCO2e", kg(g)),
        (None, "partial") => "partial: some regions have no contractual instruments".to_owned(),
        (None, "configured") => "incomplete: unmatched energy without a residual factor".to_owned(),
        (None, status) => format!("{status} (no contractual instruments)"),
    };
    let rows = [
        (
            "IT energy",
            format!("{} kWh ({} mJ)", kwh(t.it_energy_kwh), t.it_energy_mj),
        ),
        (
            "Facility energy (x PUE)",
            format!("{} kWh", kwh(t.facility_energy_kwh)),
        ),
        (
            "Marginal emissions",
            format!("{} kgCO2e", kg(t.marginal_co2e_g)),
        ),
        (
            "Location-based emissions",
            format!("{} kgCO2e", location(t)),
        ),
        (
            "Embodied emissions",
            format!("{} kgCO2e", kg(t.embodied_co2e_g)),
        ),
        ("Market-based emissions", market),
        (
            "Measured energy share",
            format!("{:.4}", t.provenance.energy_measured_share),
        ),
        (
            "Intervals: actual / forecast / fallback / missing",
            format!(
                "{} / {} / {} / {}",
                t.provenance.intervals_actual,
                t.provenance.intervals_forecast,
                t.provenance.intervals_fallback,
                t.provenance.intervals_missing_intensity
            ),
        ),
    ];
    for (label, value) in rows {
        p.row(&[0.0, 80.0], &[label.to_owned(), value], false);
    }
    p.down(3.0);
}

/// Daily IT energy as bars, the busiest day full height.
fn chart(p: &mut Pages, view: &StatementView) {
    p.line(12.0, true, "The month, day by day (IT energy, kWh)");
    let height = 40.0;
    p.down(height + 4.0);
    let (x0, y0, width) = (MARGIN, p.y, PAGE_W - 2.0 * MARGIN);
    let max = view
        .daily
        .iter()
        .map(|d| d.it_energy_mj)
        .max()
        .unwrap_or(0)
        .max(1) as f32;
    let days = 31.0;
    let bar = width / days;
    p.ops.push(Op::SetFillColor {
        col: Color::Rgb(Rgb {
            r: 0.18,
            g: 0.45,
            b: 0.35,
            icc_profile: None,
        }),
    });
    for d in &view.daily {
        let Some(day) = d.day.get(8..10).and_then(|s| s.parse::<f32>().ok()) else {
            continue;
        };
        let h = height * d.it_energy_mj as f32 / max;
        let x = x0 + (day - 1.0) * bar;
        p.ops.push(Op::DrawPolygon {
            polygon: Polygon {
                rings: vec![PolygonRing {
                    points: vec![
                        point(x, y0),
                        point(x + bar * 0.8, y0),
                        point(x + bar * 0.8, y0 + h),
                        point(x, y0 + h),
                    ],
                }],
                ..Default::default()
            },
        });
    }
    p.ops.push(Op::SetFillColor {
        col: Color::Rgb(Rgb {
            r: 0.0,
            g: 0.0,
            b: 0.0,
            icc_profile: None,
        }),
    });
    let peak = format!("peak day {} kWh", kwh(f64::from(max) / 3.6e9));
    p.text_at(x0, y0 + height + 1.0, 7.0, false, &peak);
    for day in [1.0f32, 8.0, 15.0, 22.0, 29.0] {
        p.text_at(
            x0 + (day - 1.0) * bar,
            y0 - 3.5,
            7.0,
            false,
            &format!("{day}"),
        );
    }
    p.down(6.0);
}

fn tables(p: &mut Pages, view: &StatementView) {
    let cols = [0.0, 45.0, 75.0, 100.0, 125.0, 150.0];
    let head = |first: &str| -> Vec<String> {
        [
            first,
            "IT kWh",
            "IT mJ",
            "marginal kg",
            "location kg",
            "embodied kg",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let cells = |name: String, a: &StatementAmounts| -> Vec<String> {
        vec![
            name,
            kwh(a.it_energy_kwh),
            a.it_energy_mj.to_string(),
            kg(a.marginal_co2e_g),
            location(a),
            kg(a.embodied_co2e_g),
        ]
    };
    p.line(12.0, true, "Per instance");
    p.row(&cols, &head("instance"), true);
    for i in &view.instances {
        p.row(&cols, &cells(i.instance_id.clone(), &i.amounts), false);
    }
    p.down(3.0);
    p.line(12.0, true, "Per workload (its part of the month)");
    if view.workloads.is_empty() {
        p.line(9.0, false, "No workload overlaps the month.");
    } else {
        p.row(&cols, &head("workload"), true);
        for w in &view.workloads {
            p.row(&cols, &cells(w.label.clone(), &w.amounts), false);
            p.line(
                7.5,
                false,
                &format!(
                    "    {}: SCI {:.3} gCO2e per {} (R = {})",
                    w.workload_id, w.sci_g_per_unit, w.functional_unit, w.functional_units
                ),
            );
        }
    }
    p.down(3.0);
    p.line(12.0, true, "Adjustments to earlier issued months");
    if view.adjustments.is_empty() {
        p.line(9.0, false, "None.");
    }
    for a in &view.adjustments {
        p.line(
            9.0,
            false,
            &format!(
                "{} (found {}): {} mJ, marginal {} kgCO2e, location {} kgCO2e - {}",
                a.period,
                a.dated,
                a.it_energy_mj,
                kg(a.marginal_co2e_g),
                kg(a.location_co2e_g),
                a.reason
            ),
        );
    }
}

/// The carbon-aware potential, when the statement has one (statements issued before it existed
/// do not).
fn potential(p: &mut Pages, view: &StatementView) {
    let Some(c) = &view.carbon_aware else {
        return;
    };
    let grams =
        |g: Option<f64>| g.map_or_else(|| "n/a".to_owned(), |g| format!("{} kgCO2e", kg(g)));
    p.down(3.0);
    p.line(12.0, true, "Carbon-aware potential");
    p.line(
        8.0,
        false,
        &format!(
            "Workloads that ended in the month, on the {}: Flexible Start within {} h,",
            c.basis, c.window_hours
        ),
    );
    p.line(
        8.0,
        false,
        &format!(
            "Pause and Resume with a deadline of {} x the run's length (Dodge et al. 2022).",
            c.deadline_factor
        ),
    );
    p.line(
        9.0,
        false,
        &format!(
            "Flexible Start would have saved {} kgCO2e; Pause and Resume {} kgCO2e.",
            kg(c.flexible_start_saving_co2e_g),
            kg(c.pause_resume_saving_co2e_g)
        ),
    );
    for w in &c.workloads {
        let mut line = format!(
            "  {}: flexible start {}, pause and resume {}",
            w.workload_id,
            grams(w.flexible_start_saving_co2e_g),
            grams(w.pause_resume_saving_co2e_g)
        );
        if let Some(why) = w.unavailable.first() {
            // One line on the page: the JSON has the whole reason.
            let short: String = why.chars().take(90).collect();
            line.push_str(&format!(" ({short})"));
        }
        p.line(8.0, false, &line);
    }
}

/// Market-based emissions per region, when the provider configured contractual instruments
/// for a region the tenant used.
fn market(p: &mut Pages, view: &StatementView) {
    if view.market_based.regions.is_empty() {
        return;
    }
    let opt = |v: Option<f64>, f: fn(f64) -> String| v.map_or_else(|| "n/a".to_owned(), f);
    let cols = [0.0, 40.0, 70.0, 95.0, 120.0, 145.0];
    p.down(3.0);
    p.line(
        12.0,
        true,
        "Market-based emissions (hourly matched instruments)",
    );
    p.row(
        &cols,
        &[
            "region",
            "instruments",
            "facility kWh",
            "matched kWh",
            "market kg",
            "residual",
        ]
        .map(str::to_owned),
        true,
    );
    for m in &view.market_based.regions {
        p.row(
            &cols,
            &[
                m.region.clone(),
                m.status.clone(),
                kwh(m.facility_energy_kwh),
                opt(m.matched_kwh, kwh),
                opt(m.co2e_g, kg),
                m.residual.clone().unwrap_or_else(|| "n/a".to_owned()),
            ],
            false,
        );
    }
    p.line(
        8.0,
        false,
        "Each hour the region's instruments cover all tenants' energy pro rata (at most all of it);",
    );
    p.line(
        8.0,
        false,
        "matched energy at the instruments' factor, the rest at the residual mix or grid average.",
    );
}

fn notes(p: &mut Pages, view: &StatementView) {
    p.down(3.0);
    p.line(12.0, true, "Methodology and data sources");
    let sources = if view.location_sources.is_empty() {
        "none available".to_owned()
    } else {
        view.location_sources.join(", ")
    };
    let lines = [
        "Energy: the GPUs' NVML energy counter deltas (measured), or power integrated where a GPU".to_owned(),
        "has no counter (estimated); split into 5-minute intervals at bucket edges, exact to the mJ.".to_owned(),
        "Marginal emissions: each 5-minute interval's energy x PUE x the grid's marginal intensity".to_owned(),
        "for that interval (actual, else forecast, else the region's average, flagged).".to_owned(),
        format!("Location-based emissions: the same energy on the grid's average intensity ({sources})."),
        "Embodied: each GPU's manufacturing emissions amortised over its service life, for the".to_owned(),
        "time it was used. SCI = (marginal facility + embodied) / R per workload.".to_owned(),
        "Issued statements never change; later corrections appear as dated adjustments.".to_owned(),
    ];
    for l in lines {
        p.line(8.0, false, &l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_amounts_keep_their_digits() {
        assert_eq!(kg(1_234.567_8), "1.235");
        assert_eq!(kg(12.5), "0.012500");
        assert_eq!(kg(-0.4), "-0.000400");
        assert_eq!(kwh(0.0123456), "0.012346");
        assert_eq!(kwh(286_300.0), "286300.000");
    }
}
