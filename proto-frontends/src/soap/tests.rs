//! Unit tests of the SOAP request parser, the response and fault writers and the WSDL. Parser
//! cases go through [`check`], which summarises the outcome as `"1.1 ids=1,2"` or
//! `"fault 1.2 Sender InvalidId bad=abc"`.

use std::sync::Arc;

use presenced_core::model::{ClientSet, ClientType, ExtLimits};
use presenced_core::{Ext, Sid, Status};
use proptest::prelude::*;

use super::*;
use crate::fuzzing::{self, well_formed};

const LIMITS: SoapLimits = SoapLimits {
    max_depth: 12,
    max_ids: 5,
};

fn summary(xml: &str, fallback: SoapVersion) -> String {
    let mut ids = Vec::new();
    let v = |v: SoapVersion| if v == SoapVersion::V11 { "1.1" } else { "1.2" };
    match parse_request(xml.as_bytes(), fallback, &LIMITS, &mut ids) {
        Ok(version) => {
            let ids: Vec<String> = ids.iter().map(|s| s.get().to_string()).collect();
            format!("{} ids={}", v(version), ids.join(","))
        }
        Err(f) => {
            let mut s = format!(
                "fault {} {} {}",
                v(f.version),
                f.kind.local_name(f.version),
                f.code.as_str()
            );
            if let Some(b) = f.bad_value {
                s.push_str(&format!(" bad={b}"));
            }
            s
        }
    }
}

#[track_caller]
fn check(xml: &str, expected: &str) {
    assert_eq!(summary(xml, SoapVersion::V11), expected, "xml: {xml}");
}

/// A SOAP 1.1 request whose `GetPresence` element is `op`.
fn env11(op: &str) -> String {
    format!(
        r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>{op}</soap:Body></soap:Envelope>"#
    )
}

fn ids(inner: &str) -> String {
    env11(&format!(
        r#"<GetPresence xmlns="urn:presenced:v1"><ids>{inner}</ids></GetPresence>"#
    ))
}

#[test]
fn what_real_clients_send() {
    // zeep, SOAP 1.1.
    check(
        "<?xml version='1.0' encoding='utf-8'?>\n<soap-env:Envelope xmlns:soap-env=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap-env:Body><ns0:GetPresence xmlns:ns0=\"urn:presenced:v1\"><ns0:ids><ns0:id>10086</ns0:id><ns0:id>18446744073709551615</ns0:id></ns0:ids></ns0:GetPresence></soap-env:Body></soap-env:Envelope>",
        "1.1 ids=10086,18446744073709551615",
    );
    // zeep, SOAP 1.2.
    check(
        "<?xml version='1.0' encoding='utf-8'?>\n<soap-env:Envelope xmlns:soap-env=\"http://www.w3.org/2003/05/soap-envelope\"><soap-env:Body><ns0:GetPresence xmlns:ns0=\"urn:presenced:v1\"><ns0:ids><ns0:id>1</ns0:id></ns0:ids></ns0:GetPresence></soap-env:Body></soap-env:Envelope>",
        "1.2 ids=1",
    );
    // node-soap style: the operation's prefix declared on the Envelope, an empty Header.
    check(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:tns="urn:presenced:v1"><soap:Header></soap:Header><soap:Body><tns:GetPresence><tns:ids><tns:id>7</tns:id></tns:ids></tns:GetPresence></soap:Body></soap:Envelope>"#,
        "1.1 ids=7",
    );
    // WCF, SOAP 1.2 with WS-Addressing headers marked mustUnderstand; pretty-printed, BOM.
    check(
        "\u{FEFF}<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://www.w3.org/2005/08/addressing\">\n  <s:Header>\n    <a:Action s:mustUnderstand=\"1\">urn:presenced:v1/GetPresence</a:Action>\n    <a:To s:mustUnderstand=\"1\">http://h/soap</a:To>\n  </s:Header>\n  <s:Body xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n    <GetPresence xmlns=\"urn:presenced:v1\">\n      <ids>\n        <id> 3 </id>\n        <id>\n4\n</id>\n      </ids>\n    </GetPresence>\n  </s:Body>\n</s:Envelope>\n",
        "1.2 ids=3,4",
    );
    // Unqualified children, comments, CDATA, references, `+` and leading zeros.
    check(
        &env11(
            r#"<!-- c --><p:GetPresence xmlns:p="urn:presenced:v1"><ids><!-- c --><id>+0001</id><id><![CDATA[2]]></id><id>&#51;</id><id>&#x34;</id></ids></p:GetPresence>"#,
        ),
        "1.1 ids=1,2,3,4",
    );
    check(
        &env11(r#"<GetPresence xmlns="urn:presenced:v1"><ids/></GetPresence>"#),
        "1.1 ids=",
    );
}

/// DESIGN.md §3 "SOAP": a request that does not match the schema is a fault, not an empty
/// answer. `ids` is required (no `minOccurs`); its `id`s are `minOccurs="0"`.
#[test]
fn get_presence_without_ids_is_malformed() {
    let m = "fault 1.1 Client MalformedRequest";
    check(&env11(r#"<GetPresence xmlns="urn:presenced:v1"/>"#), m);
    check(
        &env11(r#"<GetPresence xmlns="urn:presenced:v1"></GetPresence>"#),
        m,
    );
    check(
        &env11(r#"<GetPresence xmlns="urn:presenced:v1"> <!-- c --> </GetPresence>"#),
        m,
    );
    check(
        &env11(r#"<GetPresence xmlns="urn:presenced:v1"><ids/></GetPresence>"#),
        "1.1 ids=",
    );
    check(
        &env11(r#"<GetPresence xmlns="urn:presenced:v1"><ids> </ids></GetPresence>"#),
        "1.1 ids=",
    );
}

#[test]
fn duplicate_attributes_are_malformed() {
    let m = "fault 1.1 Client MalformedRequest";
    // The same name twice, on every kind of element, skipped header blocks included.
    check(&ids(r#"<id a="1" a="2">1</id>"#), m);
    check(
        &env11(r#"<GetPresence xmlns="urn:presenced:v1"><ids a="1" b="2" a="1"/></GetPresence>"#),
        m,
    );
    check(
        &env11(
            r#"<GetPresence xmlns="urn:presenced:v1" xmlns="urn:presenced:v1"><ids/></GetPresence>"#,
        ),
        m,
    );
    check(
        &env11(
            r#"<GetPresence xmlns="urn:presenced:v1" xmlns:p="urn:x" xmlns:p="urn:y"><ids/></GetPresence>"#,
        ),
        m,
    );
    check(
        r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Header><h xmlns="urn:h" soap:mustUnderstand="0" soap:mustUnderstand="0"/></soap:Header><soap:Body><GetPresence xmlns="urn:presenced:v1"><ids/></GetPresence></soap:Body></soap:Envelope>"#,
        m,
    );
    // The same namespace and local name under two prefixes.
    check(
        &env11(
            r#"<GetPresence xmlns="urn:presenced:v1" xmlns:a="urn:x" xmlns:b="urn:x" a:n="1" b:n="2"><ids/></GetPresence>"#,
        ),
        m,
    );
    // An undeclared prefix, a malformed attribute.
    check(
        &env11(r#"<GetPresence xmlns="urn:presenced:v1" q:n="1"><ids/></GetPresence>"#),
        m,
    );
    check(
        &env11(r#"<GetPresence xmlns="urn:presenced:v1"><ids a/></GetPresence>"#),
        m,
    );
    // Distinct names stay fine: same local name in two namespaces or none, `xml:` attributes.
    check(
        &env11(
            r#"<GetPresence xmlns="urn:presenced:v1" xmlns:a="urn:x" xmlns:b="urn:y" a:n="1" b:n="2" n="3" xml:lang="en"><ids/></GetPresence>"#,
        ),
        "1.1 ids=",
    );
    let many: String = (0..2000).map(|i| format!(" a{i}=\"{i}\"")).collect();
    check(&ids(&format!("<id{many}>7</id>")), "1.1 ids=7");
    check(&ids(&format!("<id{many} a1999=\"x\">7</id>")), m);
}

#[test]
fn invalid_ids_fault_with_the_bad_value() {
    check(
        &ids("<id>1</id><id>abc</id>"),
        "fault 1.1 Client InvalidId bad=abc",
    );
    check(&ids("<id>-1</id>"), "fault 1.1 Client InvalidId bad=-1");
    check(&ids("<id>0</id>"), "fault 1.1 Client InvalidId bad=0");
    check(&ids("<id> 0 </id>"), "fault 1.1 Client InvalidId bad=0");
    check(&ids("<id/>"), "fault 1.1 Client InvalidId bad=");
    check(
        &ids("<id>18446744073709551616</id>"),
        "fault 1.1 Client InvalidId bad=18446744073709551616",
    );
    check(&ids("<id>1 2</id>"), "fault 1.1 Client InvalidId bad=1 2");
    check(&ids("<id>1&lt;</id>"), "fault 1.1 Client InvalidId bad=1<");
    check(&ids("<id>0x10</id>"), "fault 1.1 Client InvalidId bad=0x10");
    check(&ids("<id>１</id>"), "fault 1.1 Client InvalidId bad=１");
    // Long values are cut in the fault, and what lies beyond the cut still counts.
    let long = format!("<id>{}</id>", "9".repeat(300));
    assert_eq!(
        summary(&ids(&long), SoapVersion::V11),
        format!("fault 1.1 Client InvalidId bad={}…", "9".repeat(128))
    );
    let spaced = format!("<id>{}1{}</id>", " ".repeat(300), " ".repeat(300));
    check(&ids(&spaced), "1.1 ids=1");
    let sneaky = format!("<id>1{}2</id>", " ".repeat(300));
    assert_eq!(
        summary(&ids(&sneaky), SoapVersion::V11),
        "fault 1.1 Client InvalidId bad=1…"
    );
}

#[test]
fn too_many_ids() {
    check(&ids(&"<id>1</id>".repeat(5)), "1.1 ids=1,1,1,1,1");
    check(&ids(&"<id>1</id>".repeat(6)), "fault 1.1 Client TooManyIds");
}

#[test]
fn malformed_requests() {
    let m = "fault 1.1 Client MalformedRequest";
    check("", m);
    check("hello", m);
    check("<a/>", m);
    check(&ids("<id>1</id>").replace("</soap:Envelope>", ""), m);
    check(&(ids("<id>1</id>") + "<x/>"), m);
    check(&(ids("<id>1</id>") + "text"), m);
    check(
        &format!("<!DOCTYPE x [<!ENTITY e \"1\">]>{}", ids("<id>&e;</id>")),
        m,
    );
    check(&ids("<id>&e;</id>"), m);
    check(&ids("<id>&amp</id>"), m);
    check(&ids("<id>&#0;</id>"), m);
    check(&format!("<?pi x?>{}", ids("<id>1</id>")), m);
    check(&ids("<id>1</id><?pi x?>"), m);
    check(&format!("{}<?xml version=\"1.0\"?>", ids("")), m);
    check(&ids("<id><b>1</b></id>"), m);
    check(&ids("<x>1</x>"), m);
    check(&ids("<id>1</ID>"), m);
    check(&ids("<p:id>1</p:id>"), m);
    check(&env11(r#"<Other xmlns="urn:presenced:v1"/>"#), m);
    check(&env11(r#"<GetPresence xmlns="urn:other"/>"#), m);
    check(&env11(r#"<GetPresence/>"#), m);
    check(&env11(""), m);
    check(
        &env11(r#"<GetPresence xmlns="urn:presenced:v1"/><GetPresence xmlns="urn:presenced:v1"/>"#),
        m,
    );
    check(
        &env11(r#"<GetPresence xmlns="urn:presenced:v1"><ids/><ids/></GetPresence>"#),
        m,
    );
    check(
        &env11(r#"<GetPresence xmlns="urn:presenced:v1"><x/></GetPresence>"#),
        m,
    );
    check(
        r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"/>"#,
        m,
    );
    check(
        r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Header/></soap:Envelope>"#,
        m,
    );
    check(
        r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body/><soap:Header/></soap:Envelope>"#,
        m,
    );
    check(
        r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Header/><soap:Header/><soap:Body/></soap:Envelope>"#,
        m,
    );
    check(
        r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><x:a/></soap:Body></soap:Envelope>"#,
        m,
    );
    check(
        &ids("<id>\u{1}</id>"),
        "fault 1.1 Client InvalidId bad=\u{1}",
    );
    check("\x00\x01", m);
}

#[test]
fn nesting_is_bounded() {
    let deep = |n: usize| {
        let open: String = (0..n).map(|_| "<h>").collect();
        let close: String = (0..n).map(|_| "</h>").collect();
        format!(
            r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Header>{open}{close}</soap:Header><soap:Body><GetPresence xmlns="urn:presenced:v1"><ids/></GetPresence></soap:Body></soap:Envelope>"#
        )
    };
    // Envelope and Header take two levels of the twelve.
    check(&deep(10), "1.1 ids=");
    check(&deep(11), "fault 1.1 Client MalformedRequest");
    check(&deep(100_000), "fault 1.1 Client MalformedRequest");
}

#[test]
fn versions() {
    let v12 = r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><GetPresence xmlns="urn:presenced:v1"><ids><id>x</id></ids></GetPresence></e:Body></e:Envelope>"#;
    check(v12, "fault 1.2 Sender InvalidId bad=x");
    // A mixed-up envelope: the Body must be in the Envelope's namespace.
    check(
        r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><s:Body xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"/></e:Envelope>"#,
        "fault 1.2 Sender MalformedRequest",
    );
    check(
        r#"<Envelope xmlns="urn:soap:9"><Body/></Envelope>"#,
        "fault 1.1 VersionMismatch MalformedRequest",
    );
    // Faults about envelopes too broken to tell use the Content-Type's version.
    assert_eq!(
        summary("junk", SoapVersion::V12),
        "fault 1.2 Sender MalformedRequest"
    );
    assert_eq!(
        SoapVersion::from_content_type(Some("application/soap+xml; action=x")),
        SoapVersion::V12
    );
    assert_eq!(
        SoapVersion::from_content_type(Some("text/xml; charset=utf-8")),
        SoapVersion::V11
    );
    assert_eq!(SoapVersion::from_content_type(None), SoapVersion::V11);
}

#[test]
fn must_understand_headers() {
    let with_header = |v: SoapVersion, header: &str| {
        let ns = v.namespace();
        format!(
            r#"<s:Envelope xmlns:s="{ns}"><s:Header xmlns:x="urn:x">{header}</s:Header><s:Body><GetPresence xmlns="urn:presenced:v1"><ids/></GetPresence></s:Body></s:Envelope>"#
        )
    };
    let v11 = SoapVersion::V11;
    let v12 = SoapVersion::V12;
    check(
        &with_header(v11, r#"<x:a s:mustUnderstand="1"/>"#),
        "fault 1.1 MustUnderstand MalformedRequest",
    );
    check(
        &with_header(v12, r#"<x:a s:mustUnderstand="true"/>"#),
        "fault 1.2 MustUnderstand MalformedRequest",
    );
    check(
        &with_header(v11, r#"<x:a s:mustUnderstand="0"><x:b/></x:a>"#),
        "1.1 ids=",
    );
    check(
        &with_header(v11, r#"<x:a mustUnderstand="1"/>"#),
        "1.1 ids=",
    );
    check(
        &with_header(
            v11,
            r#"<x:a s:mustUnderstand="1" s:actor="urn:elsewhere"/>"#,
        ),
        "1.1 ids=",
    );
    check(
        &with_header(
            v11,
            r#"<x:a s:mustUnderstand="1" s:actor="http://schemas.xmlsoap.org/soap/actor/next"/>"#,
        ),
        "fault 1.1 MustUnderstand MalformedRequest",
    );
    check(
        &with_header(
            v12,
            r#"<x:a s:mustUnderstand="1" s:role="http://www.w3.org/2003/05/soap-envelope/role/none"/>"#,
        ),
        "1.2 ids=",
    );
    check(
        &with_header(
            v12,
            r#"<x:a s:mustUnderstand="1" s:role="http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver"/>"#,
        ),
        "fault 1.2 MustUnderstand MalformedRequest",
    );
    // Text and nested elements in header blocks are skipped.
    check(
        &with_header(v11, "<x:a>text <x:b>&amp;</x:b></x:a>text"),
        "1.1 ids=",
    );
}

fn sid(n: u64) -> Sid {
    Sid::new(n).unwrap()
}

fn alice() -> Status {
    let mut clients = ClientSet::default();
    clients.insert(ClientType::Pc);
    clients.insert(ClientType::Sms);
    let ext = Ext::new(
        vec![
            ("nick".into(), "a<&>\"'\u{1}b".into()),
            ("city".into(), "北京".into()),
        ],
        &ExtLimits::default(),
    )
    .unwrap();
    Status {
        sid: sid(10086),
        known: true,
        online: true,
        clients,
        accepts_strangers: true,
        changed_at_ms: Some(1_764_064_800_123),
        uid: Some(1),
        ext: Some(Arc::new(ext)),
    }
}

fn logged_out() -> Status {
    Status {
        sid: sid(10010),
        known: true,
        online: false,
        clients: ClientSet::default(),
        accepts_strangers: false,
        changed_at_ms: Some(1_764_064_740_123),
        uid: Some(2),
        ext: None,
    }
}

#[test]
fn response_bytes() {
    let mut out = Vec::new();
    write_response(
        SoapVersion::V11,
        &[alice(), Status::unknown(sid(u64::MAX)), logged_out()],
        &mut out,
    );
    let expected = concat!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n",
        "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>",
        "<GetPresenceResponse xmlns=\"urn:presenced:v1\"><statuses>",
        "<status><id>10086</id><known>true</known><online>true</online>",
        "<clients><client>PC</client><client>SMS</client></clients>",
        "<acceptsStrangers>true</acceptsStrangers><lastChange>2025-11-25T10:00:00.123Z</lastChange>",
        "<extensions><entry><key>city</key><value>北京</value></entry>",
        "<entry><key>nick</key><value>a&lt;&amp;&gt;&quot;&apos;\u{FFFD}b</value></entry></extensions></status>",
        "<status><id>18446744073709551615</id><known>false</known><online>false</online><clients></clients>",
        "<acceptsStrangers>false</acceptsStrangers></status>",
        "<status><id>10010</id><known>true</known><online>false</online><clients></clients>",
        "<acceptsStrangers>false</acceptsStrangers><lastChange>2025-11-25T09:59:00.123Z</lastChange></status>",
        "</statuses></GetPresenceResponse></soap:Body></soap:Envelope>",
    );
    assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);
    assert!(well_formed(&out));
    out.clear();
    write_response(SoapVersion::V12, &[], &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<env:Envelope xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\"><env:Body><GetPresenceResponse xmlns=\"urn:presenced:v1\"><statuses></statuses></GetPresenceResponse></env:Body></env:Envelope>"
    );
}

#[test]
fn fault_bytes() {
    let f = Fault {
        version: SoapVersion::V11,
        kind: FaultKind::Client,
        code: FaultCode::InvalidId,
        message: "invalid id \"<x>\"".into(),
        bad_value: Some("<x>".into()),
    };
    let mut out = Vec::new();
    write_fault(&f, &mut out);
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        concat!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n",
            "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><soap:Fault>",
            "<faultcode>soap:Client</faultcode><faultstring>invalid id &quot;&lt;x&gt;&quot;</faultstring>",
            "<detail><PresenceFault xmlns=\"urn:presenced:v1\"><code>InvalidId</code>",
            "<message>invalid id &quot;&lt;x&gt;&quot;</message><badValue>&lt;x&gt;</badValue></PresenceFault>",
            "</detail></soap:Fault></soap:Body></soap:Envelope>"
        )
    );
    let f = Fault {
        version: SoapVersion::V12,
        kind: FaultKind::Server,
        code: FaultCode::TooManyIds,
        message: "m".into(),
        bad_value: None,
    };
    out.clear();
    write_fault(&f, &mut out);
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        concat!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n",
            "<env:Envelope xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\"><env:Body><env:Fault>",
            "<env:Code><env:Value>env:Receiver</env:Value></env:Code>",
            "<env:Reason><env:Text xml:lang=\"en\">m</env:Text></env:Reason>",
            "<env:Detail><PresenceFault xmlns=\"urn:presenced:v1\"><code>TooManyIds</code><message>m</message>",
            "</PresenceFault></env:Detail></env:Fault></env:Body></env:Envelope>"
        )
    );
    assert!(!String::from_utf8(out).unwrap().contains("Subcode"));
}

#[test]
fn wsdl_follows_the_host_header() {
    let wsdl = |host: Option<&str>| {
        let mut out = Vec::new();
        write_wsdl(host, &mut out);
        String::from_utf8(out).unwrap()
    };
    assert_eq!(WSDL.matches(WSDL_LOCATION).count(), 2);
    let w = wsdl(Some("10.0.0.1:7480"));
    assert_eq!(
        w.matches(r#"location="http://10.0.0.1:7480/soap""#).count(),
        2
    );
    assert!(!w.contains(WSDL_LOCATION));
    assert!(wsdl(Some("[::1]:80")).contains(r#"location="http://[::1]:80/soap""#));
    for bad in [
        None,
        Some(""),
        Some("evil\"/><x"),
        Some("a b"),
        Some("h/x"),
        Some("h@x"),
    ] {
        assert!(
            wsdl(bad).contains(r#"location="http://localhost/soap""#),
            "{bad:?}"
        );
    }
    assert!(well_formed(w.as_bytes()));
}

/// The element names of `<xs:complexType name="{ty}">`'s sequence, in order.
fn schema_sequence(ty: &str) -> Vec<String> {
    let start = WSDL
        .find(&format!(r#"<xs:complexType name="{ty}">"#))
        .unwrap();
    let body = &WSDL[start..start + WSDL[start..].find("</xs:complexType>").unwrap()];
    body.split(r#"<xs:element name=""#)
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].to_owned())
        .collect()
}

#[test]
fn writer_follows_the_schema_order() {
    let mut out = Vec::new();
    write_response(SoapVersion::V11, &[alice()], &mut out);
    let xml = String::from_utf8(out).unwrap();
    let status = &xml[xml.find("<status>").unwrap() + 8..xml.find("</status>").unwrap()];
    let mut children = Vec::new();
    let mut rest = status;
    while let Some(i) = rest.find('<') {
        let name: String = rest[i + 1..]
            .chars()
            .take_while(|c| c.is_alphanumeric())
            .collect();
        children.push(name.clone());
        rest = &rest[i + 1..];
        // Skip to after this element's end tag.
        rest = &rest[rest.find(&format!("</{name}>")).unwrap() + name.len() + 3..];
    }
    assert_eq!(children, schema_sequence("Status"));
    assert_eq!(
        schema_sequence("Status"),
        [
            "id",
            "known",
            "online",
            "clients",
            "acceptsStrangers",
            "lastChange",
            "extensions"
        ]
    );
    assert_eq!(schema_sequence("ExtensionEntry"), ["key", "value"]);
    for c in ClientType::ALL {
        assert!(WSDL.contains(&format!(r#"<xs:enumeration value="{}"/>"#, c.soap_name())));
    }
}

#[test]
fn wsdl_declares_the_contract() {
    for needle in [
        r#"targetNamespace="urn:presenced:v1""#,
        r#"elementFormDefault="qualified""#,
        r#"<wsdl:service name="PresenceService">"#,
        r#"<wsdl:port name="PresenceSoap11" binding="tns:PresenceSoap11Binding">"#,
        r#"<wsdl:port name="PresenceSoap12" binding="tns:PresenceSoap12Binding">"#,
        r#"xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/""#,
        r#"xmlns:soap12="http://schemas.xmlsoap.org/wsdl/soap12/""#,
        r#"<soap:operation soapAction="urn:presenced:v1/GetPresence" style="document"/>"#,
        r#"<soap12:operation soapAction="urn:presenced:v1/GetPresence" style="document"/>"#,
        r#"<wsdl:fault name="PresenceFault" message="tns:PresenceFault"/>"#,
        r#"<xs:element name="lastChange" type="xs:dateTime" minOccurs="0"/>"#,
        r#"<xs:element name="id" type="xs:unsignedLong" minOccurs="0" maxOccurs="unbounded"/>"#,
    ] {
        assert!(WSDL.contains(needle), "{needle}");
    }
    assert_eq!(WSDL.matches("<xs:schema ").count(), 1);
    assert!(!WSDL.contains("nillable"));
    assert!(well_formed(WSDL.as_bytes()));
}

#[test]
fn id_parsing() {
    assert_eq!(parse_soap_id("\t\r\n 42 \n"), Some(sid(42)));
    assert_eq!(parse_soap_id("+42"), Some(sid(42)));
    assert_eq!(parse_soap_id("18446744073709551615"), Some(sid(u64::MAX)));
    for bad in [
        "",
        " ",
        "+",
        "++1",
        "-0",
        "0",
        "00",
        "1.0",
        "1e3",
        "18446744073709551616",
        "\u{a0}1",
    ] {
        assert_eq!(parse_soap_id(bad), None, "{bad:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        fuzzing::soap_envelope(&data);
    }

    #[test]
    fn xml_like_text_never_panics(
        parts in proptest::collection::vec(
            prop_oneof![
                Just(r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">"#),
                Just("</s:Envelope>"), Just("<s:Body>"), Just("</s:Body>"), Just("<s:Header>"),
                Just("</s:Header>"), Just(r#"<GetPresence xmlns="urn:presenced:v1">"#),
                Just("</GetPresence>"), Just("<ids>"), Just("</ids>"), Just("<id>"), Just("</id>"),
                Just("1"), Just("&amp;"), Just("&#x31;"), Just("<!-- c -->"), Just(" "),
                Just("<![CDATA[2]]>"), Just("<!DOCTYPE x>"), Just("<?p?>"),
            ],
            0..32,
        )
    ) {
        fuzzing::soap_envelope(parts.concat().as_bytes());
    }

    #[test]
    fn requests_round_trip(raw in proptest::collection::vec(1u64.., 0..5), v12 in any::<bool>()) {
        let version = if v12 { SoapVersion::V12 } else { SoapVersion::V11 };
        let want: Vec<Sid> = raw.iter().map(|&n| sid(n)).collect();
        let mut xml = Vec::new();
        write_request(version, &want, &mut xml);
        let mut got = Vec::new();
        prop_assert_eq!(parse_request(&xml, SoapVersion::V11, &LIMITS, &mut got), Ok(version));
        prop_assert_eq!(got, want);
    }

    #[test]
    fn responses_are_well_formed(
        known in any::<bool>(),
        key in "[a-z]{1,8}",
        value in any::<String>(),
        ms in any::<u64>(),
    ) {
        let ext = Ext::new(vec![(key, value)], &ExtLimits { max_value: 4096, ..ExtLimits::default() }).ok();
        let s = Status {
            sid: sid(1),
            known,
            online: known,
            clients: ClientSet::default(),
            accepts_strangers: known,
            changed_at_ms: known.then_some(ms),
            uid: None,
            ext: ext.map(Arc::new),
        };
        let mut out = Vec::new();
        write_response(SoapVersion::V12, &[s], &mut out);
        prop_assert!(well_formed(&out));
    }
}
