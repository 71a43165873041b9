"""Checks the presenced SOAP service with zeep, over both WSDL ports (SOAP 1.1 and 1.2).

Usage: zeep_check.py HTTP_PORT   (run by run.sh, which starts the server and pushes the data)

Prints one "ok NAME" or "FAIL NAME: detail" line per check; exits 1 if any check failed.
"""

import datetime
import sys

from zeep import Client
from zeep.exceptions import Fault

U64_MAX = 18446744073709551615
results = []


def check(name, cond, detail=""):
    results.append(bool(cond))
    if cond:
        print(f"ok zeep {name}")
    else:
        print(f"FAIL zeep {name}: {detail}")


def clients_of(status):
    # zeep returns None for a complex element without children, such as an empty <clients/>.
    return [] if status.clients is None else list(status.clients.client)


def statuses_of(res):
    # GetPresenceResponse holds one element, `statuses`: zeep returns its value (a StatusList),
    # or None when it is empty.
    if res is None:
        return []
    return list(res.status) if hasattr(res, "status") else list(res)


def main():
    port = int(sys.argv[1])
    client = Client(f"http://127.0.0.1:{port}/soap?wsdl")
    fault_type = client.get_element("{urn:presenced:v1}PresenceFault")
    for port_name in ("PresenceSoap11", "PresenceSoap12"):
        tag = port_name[-2:]
        svc = client.bind("PresenceService", port_name)
        res = svc.GetPresence(ids={"id": [10086, U64_MAX, 42, 10010]})
        st = statuses_of(res)
        check(f"{tag} count", len(st) == 4, repr(res))
        if len(st) != 4:
            continue
        alice, maxed, unknown, gone = st
        ids = [s.id for s in st]
        check(f"{tag} u64 ids round-trip exactly", ids == [10086, U64_MAX, 42, 10010]
              and all(type(i) is int for i in ids), ids)
        check(f"{tag} booleans", (alice.known, alice.online, alice.acceptsStrangers)
              == (True, True, True), alice)
        check(f"{tag} client enum values", clients_of(alice) == ["PC", "Mobile"], alice.clients)
        lc = alice.lastChange
        check(f"{tag} lastChange is a UTC-aware datetime",
              isinstance(lc, datetime.datetime) and lc.tzinfo is not None
              and lc.utcoffset() == datetime.timedelta(0), repr(lc))
        ext = alice.extensions
        check(f"{tag} extensions", ext is not None and [(e.key, e.value) for e in ext.entry]
              == [("nick", "alice")], ext)
        check(f"{tag} id 2^64-1 known on web", maxed.known and clients_of(maxed) == ["Web"], maxed)
        check(f"{tag} unknown id has no lastChange",
              (unknown.known, unknown.online, unknown.acceptsStrangers, unknown.lastChange,
               unknown.extensions) == (False, False, False, None, None)
              and clients_of(unknown) == [], unknown)
        check(f"{tag} logged-out user stays known with lastChange",
              (gone.known, gone.online, gone.acceptsStrangers) == (True, False, False)
              and clients_of(gone) == [] and isinstance(gone.lastChange, datetime.datetime), gone)
        empty = statuses_of(svc.GetPresence(ids={"id": []}))
        check(f"{tag} empty batch", empty == [], empty)
        try:
            svc.GetPresence(ids={"id": [0]})
            check(f"{tag} fault for id 0", False, "no fault raised")
        except Fault as f:
            detail = f.detail
            node = None if detail is None else detail.find("{urn:presenced:v1}PresenceFault")
            typed = None if node is None else fault_type.parse(node, client.wsdl.types)
            check(f"{tag} typed fault InvalidId for id 0",
                  typed is not None and typed.code == "InvalidId" and typed.badValue == "0"
                  and typed.message, f"code={f.code!r} detail={typed!r}")
            want = "Client" if tag == "11" else "Sender"
            check(f"{tag} fault code is {want}", f.code is not None and f.code.endswith(want), f.code)
    failed = results.count(False)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 - any crash is one failed check
        print(f"FAIL zeep crashed: {type(e).__name__}: {e}")
        sys.exit(1)
