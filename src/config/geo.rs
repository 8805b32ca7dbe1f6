//! `[geo]`: from the file's rules and table to a [`GeoRoutingPolicy`].

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::file::{FileConfig, GeoFile, RouteFile};
use super::validate::{ConfigError, Ctx};
use crate::geo::{GeoBuilder, GeoError, GeoRoutingPolicy, RegionId, Sticky};
use crate::router::RouteGeo;

/// Every region an endpoint of some service is in (service regions), with
/// its field path.
fn endpoint_regions(raw: &FileConfig) -> Vec<(String, &Spanned<String>)> {
    let mut out = Vec::new();
    for (i, svc) in raw.services.iter().enumerate() {
        for (j, e) in svc.endpoints.iter().enumerate() {
            if let Some(r) = &e.region {
                out.push((format!("services[{i}].endpoints[{j}].region"), r));
            }
        }
        if let Some(d) = svc
            .discovery
            .as_ref()
            .and_then(|d| d.get_ref().region.as_ref())
        {
            out.push((format!("services[{i}].discovery.region"), d));
        }
    }
    // The voice relay's regions are served regions too.
    if let Some(r) = &raw.relay {
        let r = r.get_ref();
        if let Some(own) = &r.region {
            out.push(("relay.region".to_owned(), own));
        }
        for (i, other) in r.regions.iter().enumerate() {
            out.push((format!("relay.regions[{i}].name"), &other.name));
        }
    }
    out
}

/// ISO 3166-1 alpha-2 codes in use (what GeoIP databases and CDNs send).
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW XK";

fn is_country(code: &str) -> bool {
    code.len() == 2 && COUNTRIES.split(' ').any(|c| c.eq_ignore_ascii_case(code))
}

/// Build the policy.
pub(super) fn build(
    cx: &Ctx<'_>,
    raw: &FileConfig,
    geo: &Spanned<GeoFile>,
    warnings: &mut Vec<String>,
) -> Result<GeoRoutingPolicy, ConfigError> {
    let g = geo.get_ref();
    let mut b = GeoRoutingPolicy::builder();
    let bad = |s: &Spanned<String>, field: String, e: GeoError| cx.spanned(s, field, e.to_string());

    // Regions requests can be sent to, and the regions the table names:
    // together the names a rule may use (a typo in a rule is an error, not
    // a silent fallback to the default).
    let mut service_regions = BTreeSet::new();
    let endpoint_regions = endpoint_regions(raw);
    for (field, r) in &endpoint_regions {
        b.region(r.get_ref())
            .map_err(|e| bad(r, field.clone(), e))?;
        service_regions.insert(r.get_ref().as_str());
    }
    let mut known: BTreeSet<&str> = service_regions.clone();
    for (client, row) in &g.latency_ms {
        known.insert(client);
        for (service, ms) in row.get_ref() {
            let field = format!("geo.latency_ms.{client}.{service}");
            b.latency(client, service, *ms.get_ref())
                .map_err(|e| cx.spanned(ms, field.clone(), e.to_string()))?;
            known.insert(service);
            if !service_regions.contains(service.as_str()) {
                warnings.push(format!(
                    "{field}: no service has endpoints in region {service:?}"
                ));
            }
        }
    }
    for (service, ms) in &g.default_latency_ms {
        let field = format!("geo.default_latency_ms.{service}");
        b.region(service)
            .map_err(|e| cx.spanned(ms, field.clone(), e.to_string()))?;
        b.default_latency(service, *ms.get_ref());
        known.insert(service);
    }
    let known_list = || known.iter().copied().collect::<Vec<_>>().join(", ");
    let rule_region = |b: &mut GeoBuilder, r: &Spanned<String>, field: String| {
        if !known.contains(r.get_ref().as_str()) {
            return Err(cx.spanned(
                r,
                field,
                format!(
                    "unknown region {:?}: not an endpoint region nor in [geo.latency_ms] (known: {})",
                    r.get_ref(),
                    known_list()
                ),
            ));
        }
        b.region(r.get_ref()).map_err(|e| bad(r, field, e))
    };

    if let Some(d) = &g.default_region {
        rule_region(&mut b, d, "geo.default_region".into())?;
        b.default_region(d.get_ref())
            .map_err(|e| bad(d, "geo.default_region".into(), e))?;
    }
    for (i, n) in g.networks.iter().enumerate() {
        let net = super::validate::parse_cidr(n.cidr.get_ref()).ok_or_else(|| {
            cx.spanned(
                &n.cidr,
                format!("geo.networks[{i}].cidr"),
                format!("{:?} is not a CIDR or IP address", n.cidr.get_ref()),
            )
        })?;
        if net.trunc() != net {
            return Err(cx.spanned(
                &n.cidr,
                format!("geo.networks[{i}].cidr"),
                format!(
                    "{:?} has host bits set: did you mean \"{}\"?",
                    n.cidr.get_ref(),
                    net.trunc()
                ),
            ));
        }
        if let Some(j) = g.networks[..i]
            .iter()
            .position(|o| super::validate::parse_cidr(o.cidr.get_ref()) == Some(net))
        {
            return Err(cx.spanned(
                &n.cidr,
                format!("geo.networks[{i}].cidr"),
                format!("{net} already has a rule (geo.networks[{j}])"),
            ));
        }
        rule_region(&mut b, &n.region, format!("geo.networks[{i}].region"))?;
        b.network(net, n.region.get_ref())
            .map_err(|e| bad(&n.region, format!("geo.networks[{i}].region"), e))?;
    }
    for (i, c) in g.countries.iter().enumerate() {
        let field = format!("geo.countries[{i}].country");
        let code = c.country.get_ref();
        if !is_country(code) {
            let hint = match code.to_ascii_uppercase().as_str() {
                "UK" => " (the United Kingdom is \"GB\")",
                "EL" => " (Greece is \"GR\")",
                _ => "",
            };
            return Err(cx.spanned(
                &c.country,
                field,
                format!("{code:?} is not an ISO 3166-1 alpha-2 country code (e.g. \"DE\"){hint}"),
            ));
        }
        if let Some(j) = g.countries[..i]
            .iter()
            .position(|o| o.country.get_ref().eq_ignore_ascii_case(code))
        {
            return Err(cx.spanned(
                &c.country,
                field,
                format!("{code:?} already has a rule (geo.countries[{j}])"),
            ));
        }
        rule_region(&mut b, &c.region, format!("geo.countries[{i}].region"))?;
        b.country(code, c.region.get_ref())
            .map_err(|e| cx.spanned(&c.country, field, e.to_string()))?;
    }

    for (i, c) in g.continents.iter().enumerate() {
        rule_region(&mut b, &c.region, format!("geo.continents[{i}].region"))?;
        let ok = matches!(
            c.continent.get_ref().to_ascii_uppercase().as_str(),
            "AF" | "AN" | "AS" | "EU" | "NA" | "OC" | "SA"
        );
        if !ok {
            return Err(cx.spanned(
                &c.continent,
                format!("geo.continents[{i}].continent"),
                format!(
                    "{:?} is not a continent code (AF, AN, AS, EU, NA, OC, SA)",
                    c.continent.get_ref()
                ),
            ));
        }
        if let Some(j) = g.continents[..i].iter().position(|o| {
            o.continent
                .get_ref()
                .eq_ignore_ascii_case(c.continent.get_ref())
        }) {
            return Err(cx.spanned(
                &c.continent,
                format!("geo.continents[{i}].continent"),
                format!(
                    "{:?} already has a rule (geo.continents[{j}])",
                    c.continent.get_ref()
                ),
            ));
        }
        b.continent(c.continent.get_ref(), c.region.get_ref())
            .map_err(|e| bad(&c.region, format!("geo.continents[{i}].region"), e))?;
    }
    if let Some(h) = &g.region_header {
        let name = http::HeaderName::from_bytes(h.get_ref().as_bytes())
            .map_err(|_| cx.spanned(h, "geo.region_header", "not a valid header name"))?;
        if raw.server.trusted_proxies.is_empty() {
            warnings.push(format!(
                "geo.region_header {:?} is believed only from [server] trusted_proxies, and there are none",
                h.get_ref()
            ));
        }
        b.region_header(name);
    }
    if let Some(m) = &g.mmdb {
        let path = cx.file.parent().unwrap_or(Path::new(".")).join(m.get_ref());
        let bytes =
            super::files::read_capped(&path, super::files::MAX_MMDB_BYTES).map_err(|e| {
                cx.spanned(
                    m,
                    "geo.mmdb",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
        let reader = maxminddb::Reader::from_source(bytes).map_err(|e| {
            cx.spanned(
                m,
                "geo.mmdb",
                format!("cannot read {} as a MaxMind database: {e}", path.display()),
            )
        })?;
        let kind = reader.metadata().database_type.clone();
        if !["Country", "City", "Enterprise"]
            .iter()
            .any(|k| kind.contains(k))
        {
            warnings.push(format!(
                "geo.mmdb: database type {kind:?} may have no country or continent data"
            ));
        }
        if g.countries.is_empty() && g.continents.is_empty() {
            warnings.push(
                "geo.mmdb is set but there are no [[geo.countries]] or [[geo.continents]] rules: it places no client".into(),
            );
        }
        b.mmdb(reader);
    }
    if let Some(ms) = &g.unknown_latency_ms {
        b.unknown_latency_ms(*ms.get_ref());
    }
    if let Some(ms) = &g.hysteresis_ms {
        b.hysteresis_ms(*ms.get_ref());
    }
    if let Some(s) = &g.failback_seconds {
        if *s.get_ref() > 86_400 {
            return Err(cx.spanned(s, "geo.failback_seconds", "must be at most 86400 (a day)"));
        }
        b.failback(Duration::from_secs(*s.get_ref()));
    }
    if let Some(n) = &g.cache_entries {
        if !(1..=1 << 24).contains(n.get_ref()) {
            return Err(cx.spanned(n, "geo.cache_entries", "must be between 1 and 16777216"));
        }
        b.cache_entries(*n.get_ref());
    }
    b.sticky(sticky(cx, g)?);
    // Regions the table cannot reach or does not know: worth a warning
    // (a typo in a row or an endpoint's region is otherwise silent).
    let has_table = !g.latency_ms.is_empty() || !g.default_latency_ms.is_empty();
    let columns: BTreeSet<&str> = g
        .latency_ms
        .values()
        .flat_map(|row| row.get_ref().keys())
        .chain(g.default_latency_ms.keys())
        .map(String::as_str)
        .collect();
    let mut warned = BTreeSet::new();
    for (field, r) in &endpoint_regions {
        let name = r.get_ref().as_str();
        if has_table && !columns.contains(name) && warned.insert(name) {
            warnings.push(
                cx.spanned(
                    r,
                    field.clone(),
                    format!(
                        "region {name:?} is in no [geo.latency_ms] column nor [geo.default_latency_ms]: clients of other regions see it at unknown_latency_ms"
                    ),
                )
                .to_string(),
            );
        }
    }
    if g.region_header.is_none() {
        let placed: BTreeSet<&str> = g
            .default_region
            .iter()
            .map(|d| d.get_ref().as_str())
            .chain(g.networks.iter().map(|n| n.region.get_ref().as_str()))
            .chain(g.countries.iter().map(|c| c.region.get_ref().as_str()))
            .chain(g.continents.iter().map(|c| c.region.get_ref().as_str()))
            .collect();
        for (client, row) in &g.latency_ms {
            if !placed.contains(client.as_str()) {
                warnings.push(
                    cx.spanned(
                        row,
                        format!("geo.latency_ms.{client}"),
                        format!(
                            "no rule places clients in {client:?} (not default_region nor a networks/countries/continents region): this row is never used"
                        ),
                    )
                    .to_string(),
                );
            }
        }
    }
    if g.latency_ms.is_empty() && g.default_latency_ms.is_empty() {
        warnings.push(
            "[geo] has no latency_ms table: only same-region endpoints count as near (others cost unknown_latency_ms)".into(),
        );
    }
    Ok(b.build())
}

fn sticky(cx: &Ctx<'_>, g: &GeoFile) -> Result<Sticky, ConfigError> {
    let mode = g.sticky.as_ref().map_or("off", |s| s.get_ref().as_str());
    let name = g.sticky_name.as_ref();
    let named = |default: &str| name.map_or(default.to_owned(), |n| n.get_ref().clone());
    let bad_name = |what: &str| {
        let n = name.expect("only a configured name can be bad");
        cx.spanned(n, "geo.sticky_name", format!("not a valid {what} name"))
    };
    match mode {
        "off" => Ok(Sticky::Off),
        "cookie" => {
            let n = named("aether-region");
            let ok = !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !ok {
                return Err(bad_name("cookie"));
            }
            Ok(Sticky::Cookie(n))
        }
        "header" => {
            let h = http::HeaderName::from_bytes(named("x-aether-sticky-region").as_bytes())
                .map_err(|_| bad_name("header"))?;
            if g.region_header
                .as_ref()
                .is_some_and(|r| r.get_ref().eq_ignore_ascii_case(h.as_str()))
            {
                let at = name.or(g.sticky.as_ref()).expect("header mode was given");
                return Err(cx.spanned(
                    at,
                    "geo.sticky_name",
                    "must differ from region_header: a trusted proxy's location and a client's session are different claims",
                ));
            }
            Ok(Sticky::Header(h))
        }
        other => Err(cx.spanned(
            g.sticky.as_ref().expect("a mode other than off was given"),
            "geo.sticky",
            format!("unknown sticky mode {other:?} (one of \"off\", \"cookie\", \"header\")"),
        )),
    }
}

/// A route's geo setting: `region = "..."` pins, `geo = false` turns it off.
pub(super) fn route_geo(
    cx: &Ctx<'_>,
    i: usize,
    r: &RouteFile,
    geo: Option<&Arc<GeoRoutingPolicy>>,
    service_regions: &[String],
) -> Result<RouteGeo, ConfigError> {
    let field = |f: &str| format!("routes[{i}].{f}");
    let Some(geo) = geo else {
        if let Some(x) = &r.region {
            return Err(cx.spanned(
                x,
                field("region"),
                "pins a region, which needs a [geo] section",
            ));
        }
        // `geo = false` without [geo] asks for what happens anyway.
        return Ok(RouteGeo::Nearest);
    };
    match (&r.region, &r.geo) {
        (Some(x), Some(g)) if !*g.get_ref() => Err(cx.spanned(
            x,
            field("region"),
            "a route cannot pin a region with geo = false",
        )),
        (Some(x), _) => {
            let id: Option<RegionId> = geo.id(x.get_ref());
            match id {
                Some(id) if service_regions.iter().any(|s| s == x.get_ref()) => {
                    Ok(RouteGeo::Pinned(id))
                }
                _ => Err(cx.spanned(
                    x,
                    field("region"),
                    format!(
                        "the route's service has no endpoints in region {:?} (its regions: {})",
                        x.get_ref(),
                        service_regions.join(", ")
                    ),
                )),
            }
        }
        (None, Some(g)) if !*g.get_ref() => Ok(RouteGeo::Off),
        (None, _) => Ok(RouteGeo::Nearest),
    }
}

/// The regions of one service's endpoints (and its discovery), in order.
pub(super) fn service_regions(raw: &FileConfig, service: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for svc in raw.services.iter().filter(|s| s.name.get_ref() == service) {
        let d = svc
            .discovery
            .as_ref()
            .and_then(|d| d.get_ref().region.as_ref());
        for r in svc
            .endpoints
            .iter()
            .filter_map(|e| e.region.as_ref())
            .chain(d)
        {
            if !out.contains(r.get_ref()) {
                out.push(r.get_ref().clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigError, parse};

    const BASE: &str = r#"[server]
trusted_proxies = ["10.0.0.0/8"]
[[services]]
name = "world-service"
[[services.endpoints]]
address = "127.0.0.1:9001"
region = "us-east"
[[services.endpoints]]
address = "127.0.0.1:9002"
region = "eu-west"
[[routes]]
method = "GET"
path = "/a"
service = "world-service"
"#;

    fn err(extra: &str) -> ConfigError {
        parse(&format!("{BASE}{extra}"), Path::new("gw.toml")).expect_err("should be rejected")
    }

    /// (line, field) of the error for `extra` appended to BASE.
    fn at(extra: &str) -> (usize, String, String) {
        let e = err(extra);
        (e.line - BASE.lines().count(), e.field, e.message)
    }

    #[test]
    fn the_contract_without_mmdb_parses_and_builds_the_table() {
        let cfg = parse(
            &format!(
                "{BASE}[geo]\ndefault_region = \"us-east\"\nregion_header = \"x-aether-region\"\n[[geo.networks]]\ncidr = \"198.51.100.0/24\"\nregion = \"eu-west\"\n[[geo.countries]]\ncountry = \"DE\"\nregion = \"eu-west\"\n[geo.latency_ms]\nus-east = {{ us-east = 10, eu-west = 80 }}\neu-west = {{ us-east = 80, eu-west = 10 }}\n"
            ),
            Path::new("gw.toml"),
        )
        .unwrap();
        assert_eq!(cfg.warnings, Vec::<String>::new());
        let geo = cfg.snapshot.geo.expect("[geo] built");
        let (us, eu) = (geo.id("us-east").unwrap(), geo.id("eu-west").unwrap());
        assert_eq!(geo.expected_latency_ms(Some(eu), us), 80);
        assert_eq!(geo.expected_latency_ms(Some(eu), eu), 10);
        assert_eq!(geo.default_region(), Some(us));
        let svc = cfg
            .snapshot
            .dispatcher
            .service(&crate::router::ServiceTarget::WorldService)
            .unwrap();
        assert!(svc.geo_policy().is_some());
    }

    #[test]
    fn geo_errors_name_line_and_field() {
        let cases: &[(&str, usize, &str, &str)] = &[
            (
                "[geo]\ndefault_region = \"us-est\"\n",
                2,
                "geo.default_region",
                "unknown region \"us-est\"",
            ),
            (
                "[geo]\n[[geo.networks]]\ncidr = \"198.51.100.0/33\"\nregion = \"eu-west\"\n",
                3,
                "geo.networks[0].cidr",
                "not a CIDR",
            ),
            (
                "[geo]\n[[geo.countries]]\ncountry = \"DEU\"\nregion = \"eu-west\"\n",
                3,
                "geo.countries[0].country",
                "ISO 3166-1 alpha-2",
            ),
            (
                "[geo]\n[[geo.countries]]\ncountry = \"DE\"\nregion = \"eu-wset\"\n",
                4,
                "geo.countries[0].region",
                "known: eu-west, us-east",
            ),
            (
                "[geo]\n[[geo.continents]]\ncontinent = \"XX\"\nregion = \"eu-west\"\n",
                3,
                "geo.continents[0].continent",
                "not a continent code",
            ),
            (
                "[geo]\nmmdb = \"/nonexistent/x.mmdb\"\n",
                2,
                "geo.mmdb",
                "cannot read /nonexistent/x.mmdb",
            ),
            (
                "[geo]\nregion_header = \"bad header\"\n",
                2,
                "geo.region_header",
                "not a valid header name",
            ),
            (
                "[geo]\nsticky = \"url\"\n",
                2,
                "geo.sticky",
                "unknown sticky mode",
            ),
            (
                "[geo]\nsticky = \"cookie\"\nsticky_name = \"a;b\"\n",
                3,
                "geo.sticky_name",
                "not a valid cookie name",
            ),
            (
                "[geo]\nfailback_seconds = 100000\n",
                2,
                "geo.failback_seconds",
                "at most 86400",
            ),
            (
                "[geo]\ncache_entries = 0\n",
                2,
                "geo.cache_entries",
                "between 1 and",
            ),
            (
                "[geo]\nhysteresis = 5\n",
                2,
                "geo.hysteresis",
                "unknown field `hysteresis`",
            ),
            (
                "[geo]\n[[geo.countries]]\ncountry = \"UK\"\nregion = \"eu-west\"\n",
                3,
                "geo.countries[0].country",
                "the United Kingdom is \"GB\"",
            ),
            (
                "[geo]\n[[geo.countries]]\ncountry = \"DE\"\nregion = \"eu-west\"\n[[geo.countries]]\ncountry = \"de\"\nregion = \"us-east\"\n",
                6,
                "geo.countries[1].country",
                "already has a rule (geo.countries[0])",
            ),
            (
                "[geo]\n[[geo.continents]]\ncontinent = \"EU\"\nregion = \"eu-west\"\n[[geo.continents]]\ncontinent = \"EU\"\nregion = \"us-east\"\n",
                6,
                "geo.continents[1].continent",
                "already has a rule (geo.continents[0])",
            ),
            (
                "[geo]\n[[geo.networks]]\ncidr = \"203.0.113.0/24\"\nregion = \"eu-west\"\n[[geo.networks]]\ncidr = \"203.0.113.0/24\"\nregion = \"us-east\"\n",
                6,
                "geo.networks[1].cidr",
                "already has a rule (geo.networks[0])",
            ),
            (
                "[geo]\n[[geo.networks]]\ncidr = \"203.0.113.7/24\"\nregion = \"eu-west\"\n",
                3,
                "geo.networks[0].cidr",
                "did you mean \"203.0.113.0/24\"",
            ),
            (
                "[geo]\nregion_header = \"x-aether-region\"\nsticky = \"header\"\nsticky_name = \"X-Aether-Region\"\n",
                4,
                "geo.sticky_name",
                "must differ from region_header",
            ),
            (
                "[geo.latency_ms]\n\"us east\" = { us-east = 1 }\n",
                2,
                "geo.latency_ms.us east.us-east",
                "region name",
            ),
        ];
        for (extra, line, field, message) in cases {
            let (l, f, m) = at(extra);
            assert_eq!((l, f.as_str()), (*line, *field), "{extra}: {m}");
            assert!(m.contains(message), "{extra}: {m}");
        }
    }

    #[test]
    fn route_geo_settings_are_checked() {
        let route = |extra: &str| {
            format!(
                "[[routes]]\nmethod = \"GET\"\npath = \"/b\"\nservice = \"world-service\"\n{extra}"
            )
        };
        let (l, f, m) = at(&route("region = \"eu-west\"\n"));
        assert_eq!((l, f.as_str()), (5, "routes[1].region"));
        assert!(m.contains("needs a [geo] section"), "{m}");
        let geo = "[geo]\n[geo.latency_ms]\nap-south = { us-east = 200 }\n";
        let (l, f, m) = at(&format!("{}{geo}", route("region = \"ap-south\"\n")));
        assert_eq!((l, f.as_str()), (5, "routes[1].region"));
        assert!(
            m.contains("no endpoints in region \"ap-south\" (its regions: us-east, eu-west)"),
            "{m}"
        );
        let (_, f, m) = at(&format!(
            "{}{geo}",
            route("region = \"eu-west\"\ngeo = false\n")
        ));
        assert_eq!(f, "routes[1].region");
        assert!(m.contains("geo = false"), "{m}");
        let cfg = parse(
            &format!("{BASE}{}{geo}", route("region = \"eu-west\"\n")),
            Path::new("gw.toml"),
        )
        .unwrap();
        // Worth warnings, not errors: an endpoint region the table does not
        // know, a row no rule places clients in.
        assert_eq!(cfg.warnings.len(), 2, "{:?}", cfg.warnings);
        assert!(
            cfg.warnings[0].starts_with("gw.toml:10:10: services[0].endpoints[1].region: region \"eu-west\" is in no [geo.latency_ms] column"),
            "{:?}",
            cfg.warnings
        );
        assert!(
            cfg.warnings[1]
                .contains("geo.latency_ms.ap-south: no rule places clients in \"ap-south\""),
            "{:?}",
            cfg.warnings
        );
        // geo = false without [geo] asks for what happens anyway.
        parse(
            &format!("{BASE}{}", route("geo = false\n")),
            Path::new("gw.toml"),
        )
        .unwrap();
        let (l, f, m) = at(&route("geo = false\nregion = \"eu-west\"\n"));
        assert_eq!((l, f.as_str()), (6, "routes[1].region"));
        assert!(m.contains("needs a [geo] section"), "{m}");
    }

    #[test]
    fn a_region_header_without_trusted_proxies_warns() {
        let text = format!("{BASE}[geo]\nregion_header = \"cf-ipcountry\"\n")
            .replace("trusted_proxies = [\"10.0.0.0/8\"]", "");
        let cfg = parse(&text, Path::new("gw.toml")).unwrap();
        assert!(
            cfg.warnings
                .iter()
                .any(|w| w.contains("believed only from [server] trusted_proxies")),
            "{:?}",
            cfg.warnings
        );
    }

    #[test]
    fn geo_warnings_for_hashing_and_endpoints_without_a_region() {
        let text = format!(
            "{}[[services.endpoints]]\naddress = \"127.0.0.1:9003\"\n[geo]\ndefault_region = \"us-east\"\n[geo.latency_ms]\nus-east = {{ us-east = 10, eu-west = 80 }}\n",
            BASE.replace(
                "name = \"world-service\"\n",
                "name = \"world-service\"\nbalance = \"consistent_hash\"\nhash_key = \"header:x-world\"\n"
            )
        );
        let cfg = parse(&text, Path::new("gw.toml")).unwrap();
        let w = cfg.warnings.join("\n");
        assert!(w.contains("some endpoints have no region"), "{w}");
        assert!(w.contains("one key can land on different endpoints"), "{w}");
    }
}
