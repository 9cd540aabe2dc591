//! The delivery-log page's chart: per destination, delivered and failed attempts per hour over
//! the last 24 hours, as bars an inline SVG template draws. Pure.

use serde::Serialize;

use crate::store::HourCount;

/// Hours shown.
pub const HOURS: i64 = 24;
const BAR_WIDTH: i64 = 12;
const HEIGHT: i64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bar {
    pub x: i64,
    /// Heights in pixels, and the counts they stand for.
    pub delivered_h: i64,
    pub failed_h: i64,
    pub delivered: u64,
    pub failed: u64,
    /// `14:00 UTC`.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chart {
    pub destination: String,
    pub bars: Vec<Bar>,
    pub width: i64,
    pub height: i64,
    pub delivered: u64,
    pub failed: u64,
}

/// One chart per destination in `names` (in that order), from the hourly counts, ending at the
/// hour `now_hour` (Unix hours).
pub fn charts(names: &[String], counts: &[HourCount], now_hour: i64) -> Vec<Chart> {
    names
        .iter()
        .map(|name| {
            let hours: Vec<(u64, u64)> = (0..HOURS)
                .map(|i| {
                    let hour = now_hour - HOURS + 1 + i;
                    counts
                        .iter()
                        .find(|c| &c.destination == name && c.hour == hour)
                        .map_or((0, 0), |c| (c.delivered, c.failed))
                })
                .collect();
            let max = hours.iter().map(|(d, f)| d + f).max().unwrap_or(0).max(1);
            let scale = |n: u64| {
                let h = n
                    .saturating_mul(u64::try_from(HEIGHT).unwrap_or(60))
                    .div_ceil(max);
                i64::try_from(h).unwrap_or(HEIGHT)
            };
            let bars = hours
                .iter()
                .enumerate()
                .map(|(i, &(delivered, failed))| {
                    let i = i64::try_from(i).unwrap_or(0);
                    let hour = (now_hour - HOURS + 1 + i).rem_euclid(24);
                    Bar {
                        x: i * BAR_WIDTH,
                        delivered_h: scale(delivered),
                        failed_h: scale(failed),
                        delivered,
                        failed,
                        label: format!("{hour:02}:00 UTC"),
                    }
                })
                .collect();
            Chart {
                destination: name.clone(),
                bars,
                width: HOURS * BAR_WIDTH,
                height: HEIGHT,
                delivered: hours.iter().map(|h| h.0).sum(),
                failed: hours.iter().map(|h| h.1).sum(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_scaled_to_the_busiest_hour() {
        let counts = vec![
            HourCount {
                destination: "crm".into(),
                hour: 100,
                delivered: 30,
                failed: 10,
            },
            HourCount {
                destination: "crm".into(),
                hour: 90,
                delivered: 4,
                failed: 0,
            },
            // Older than 24 hours: not shown.
            HourCount {
                destination: "crm".into(),
                hour: 50,
                delivered: 999,
                failed: 0,
            },
        ];
        let c = &charts(&["crm".into(), "idle".into()], &counts, 100);
        assert_eq!(c[0].bars.len(), 24);
        let last = &c[0].bars[23];
        assert_eq!((last.delivered_h, last.failed_h), (45, 15));
        assert_eq!(last.label, "04:00 UTC");
        assert_eq!(c[0].bars[13].delivered_h, 6);
        assert_eq!((c[0].delivered, c[0].failed), (34, 10));
        assert!(
            c[1].bars
                .iter()
                .all(|b| b.delivered_h == 0 && b.failed_h == 0)
        );
    }
}
