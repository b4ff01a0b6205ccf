//! Retail rules that are ours (the ERP and the loyalty platform own theirs): the arithmetic a sale must
//! satisfy before anything is posted, and the value that earns points.

use std::collections::HashSet;

use retail_sync_contracts::values::{Amount, Points};
use retail_sync_contracts::{LineItem, RefundSettled, SaleCompleted, Tender, TenderMethod, Totals};

/// Checks that lines, totals and tenders add up. Returns every finding, not just the first, so the
/// sender can fix the feed in one go.
pub fn check_sale(sale: &SaleCompleted) -> Result<(), Vec<String>> {
    let mut findings = check_lines(&sale.lines, &sale.totals);
    let tendered: i128 = sale
        .tenders
        .iter()
        .map(|t| i128::from(t.amount_minor.get()))
        .sum();
    if tendered != i128::from(sale.totals.gross_minor.get()) {
        findings.push(format!(
            "tenders add up to {tendered}, gross is {}",
            sale.totals.gross_minor
        ));
    }
    if sale.member_id.is_none() && sale.tenders.iter().any(|t| t.method == TenderMethod::Points) {
        findings.push("a points tender needs a member_id".into());
    }
    findings.extend(points_on_other_tenders(&sale.tenders));
    if findings.is_empty() {
        Ok(())
    } else {
        Err(findings)
    }
}

/// A refund's settlement: its `points` tenders say how many points they paid (they are what is given
/// back), and no other tender carries points.
pub fn check_refund(refund: &RefundSettled) -> Result<(), Vec<String>> {
    let mut findings = points_on_other_tenders(&refund.tenders);
    for (i, t) in refund.tenders.iter().enumerate() {
        if t.method == TenderMethod::Points && t.points.is_none() {
            findings.push(format!(
                "tender {}: a points tender of a refund needs `points` (how many are given back)",
                i + 1
            ));
        }
    }
    if findings.is_empty() {
        Ok(())
    } else {
        Err(findings)
    }
}

fn points_on_other_tenders(tenders: &[Tender]) -> Vec<String> {
    tenders
        .iter()
        .enumerate()
        .filter(|(_, t)| t.points.is_some() && t.method != TenderMethod::Points)
        .map(|(i, _)| format!("tender {}: points on a tender that is not points", i + 1))
        .collect()
}

/// The points a refund's `points` tenders paid.
pub fn refund_points(refund: &RefundSettled) -> Points {
    Points::saturating_sum(
        refund
            .tenders
            .iter()
            .filter(|t| t.method == TenderMethod::Points)
            .filter_map(|t| t.points),
    )
}

/// Line arithmetic shared by sales and orders: net = quantity × unit price − discount; totals are the
/// sums of the lines; gross = net + tax; line numbers unique. Sums in i128 so no input can overflow.
pub fn check_lines(lines: &[LineItem], totals: &Totals) -> Vec<String> {
    let mut findings = Vec::new();
    let mut seen = HashSet::new();
    let (mut net, mut tax) = (0_i128, 0_i128);
    for line in lines {
        if !seen.insert(line.line_no) {
            findings.push(format!("line_no {} appears twice", line.line_no));
        }
        let extended = i128::from(line.quantity) * i128::from(line.unit_price_minor.get());
        let expected = extended - i128::from(line.discount_minor.get());
        if expected != i128::from(line.net_minor.get()) {
            findings.push(format!(
                "line {}: net_minor {} but quantity × unit price − discount = {expected}",
                line.line_no, line.net_minor
            ));
        }
        net += i128::from(line.net_minor.get());
        tax += i128::from(line.tax_minor.get());
    }
    if net != i128::from(totals.net_minor.get()) {
        findings.push(format!(
            "lines' net adds up to {net}, totals.net_minor is {}",
            totals.net_minor
        ));
    }
    if tax != i128::from(totals.tax_minor.get()) {
        findings.push(format!(
            "lines' tax adds up to {tax}, totals.tax_minor is {}",
            totals.tax_minor
        ));
    }
    if i128::from(totals.net_minor.get()) + i128::from(totals.tax_minor.get())
        != i128::from(totals.gross_minor.get())
    {
        findings.push(format!(
            "gross_minor {} is not net_minor {} + tax_minor {}",
            totals.gross_minor, totals.net_minor, totals.tax_minor
        ));
    }
    findings
}

/// The value that earns points: net (before tax, after discounts) of eligible lines, less their share of
/// what was paid with points — points do not earn points, and a points tender is spread over every line
/// by net (see `ledger::eligible_by_line`).
pub fn eligible_net(lines: &[LineItem], tenders: &[Tender]) -> Amount {
    let paid_with_points: i64 = tenders
        .iter()
        .filter(|t| t.method == TenderMethod::Points)
        .map(|t| t.amount_minor.get())
        .sum();
    let eligible: i64 = crate::ledger::eligible_by_line(lines, paid_with_points)
        .iter()
        .sum();
    // Amounts are bounded by MAX_SAFE_INTEGER per line and validated sums; the fallback is unreachable.
    Amount::new(eligible.max(0)).unwrap_or(Amount::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use retail_sync_contracts::values::*;

    fn line(no: u32, qty: u32, unit: i64, discount: i64, tax: i64, eligible: bool) -> LineItem {
        LineItem {
            line_no: no,
            sku: Sku::parse(format!("sku-{no}")).unwrap(),
            quantity: qty,
            unit_price_minor: Amount::new(unit).unwrap(),
            discount_minor: Amount::new(discount).unwrap(),
            net_minor: Amount::new(i64::from(qty) * unit - discount).unwrap(),
            tax_minor: Amount::new(tax).unwrap(),
            loyalty_eligible: eligible,
            channel_line_id: None,
        }
    }

    fn sale(lines: Vec<LineItem>, tenders: Vec<(TenderMethod, i64)>) -> SaleCompleted {
        let net = lines.iter().map(|l| l.net_minor.get()).sum::<i64>();
        let tax = lines.iter().map(|l| l.tax_minor.get()).sum::<i64>();
        SaleCompleted {
            store_id: StoreId::parse("s1").unwrap(),
            receipt_id: ReceiptId::parse("r1").unwrap(),
            member_id: Some(MemberId::parse("m1").unwrap()),
            currency: Currency::parse("EUR").unwrap(),
            lines,
            totals: Totals {
                net_minor: Amount::new(net).unwrap(),
                tax_minor: Amount::new(tax).unwrap(),
                gross_minor: Amount::new(net + tax).unwrap(),
            },
            tenders: tenders
                .into_iter()
                .map(|(method, a)| Tender {
                    method,
                    amount_minor: Amount::new(a).unwrap(),
                    points: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_consistent_sale_passes() {
        let s = sale(
            vec![line(1, 2, 1000, 100, 380, true)],
            vec![(TenderMethod::Card, 2280)],
        );
        assert_eq!(check_sale(&s), Ok(()));
    }

    #[test]
    fn a_sale_whose_totals_do_not_add_up_is_refused_with_every_finding() {
        let mut s = sale(
            vec![line(1, 2, 1000, 0, 400, true), line(1, 1, 500, 0, 100, true)],
            vec![],
        );
        s.totals.gross_minor = Amount::new(1).unwrap();
        s.lines[0].net_minor = Amount::new(1999).unwrap();
        let findings = check_sale(&s).unwrap_err();
        assert!(
            findings.iter().any(|f| f.contains("appears twice")),
            "{findings:?}"
        );
        assert!(
            findings.iter().any(|f| f.contains("quantity × unit price")),
            "{findings:?}"
        );
        assert!(findings.iter().any(|f| f.contains("gross_minor")), "{findings:?}");
        assert!(findings.iter().any(|f| f.contains("tenders")), "{findings:?}");
    }

    #[test]
    fn only_a_points_tender_says_how_many_points() {
        let mut s = sale(
            vec![line(1, 1, 1000, 0, 0, true)],
            vec![(TenderMethod::Card, 1000)],
        );
        s.tenders[0].points = Some(retail_sync_contracts::values::Points::new(100).unwrap());
        let findings = check_sale(&s).unwrap_err();
        assert!(
            findings
                .iter()
                .any(|f| f.contains("tender 1: points on a tender that is not points")),
            "{findings:?}"
        );
        s.tenders[0].method = TenderMethod::Points;
        assert!(check_sale(&s).is_ok());
    }

    /// A refund's points tenders must say how many points they gave back; no other tender may; the
    /// points are summed over its points tenders.
    #[test]
    fn a_refunds_points_tenders_say_how_many_points() {
        let sample = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../events/samples/RefundSettled.json"
        ))
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&sample).unwrap();
        let mut refund: RefundSettled = serde_json::from_value(v["detail"]["data"].clone()).unwrap();
        assert!(check_refund(&refund).is_ok());
        assert_eq!(refund_points(&refund).get(), 400);
        refund.tenders.push(refund.tenders[1].clone());
        assert_eq!(refund_points(&refund).get(), 800);
        refund.tenders[1].points = None;
        refund.tenders[0].points = Some(Points::new(5).unwrap());
        let findings = check_refund(&refund).unwrap_err();
        assert_eq!(
            findings,
            [
                "tender 1: points on a tender that is not points",
                "tender 2: a points tender of a refund needs `points` (how many are given back)"
            ]
        );
    }

    fn points(amount: i64) -> Tender {
        Tender {
            method: TenderMethod::Points,
            amount_minor: Amount::new(amount).unwrap(),
            points: None,
        }
    }

    #[test]
    fn only_eligible_lines_earn_less_their_share_of_what_was_paid_with_points() {
        let lines = vec![line(1, 1, 5000, 0, 0, true), line(2, 1, 2000, 0, 0, false)];
        let tenders = vec![
            points(1000),
            Tender {
                method: TenderMethod::Card,
                amount_minor: Amount::new(6000).unwrap(),
                points: None,
            },
        ];
        // 1,000 spread by net: 714 on the eligible line, 286 on the other.
        assert_eq!(eligible_net(&lines, &tenders).get(), 4286);
    }

    #[test]
    fn a_points_tender_is_shared_with_a_gift_card_line_pro_rata() {
        // The README's worked example: 5,000 eligible + a 5,000 gift card, 1,000 paid with points.
        let lines = vec![line(1, 1, 5000, 0, 0, true), line(2, 1, 5000, 0, 0, false)];
        assert_eq!(eligible_net(&lines, &[points(1000)]).get(), 4500);
    }
}
