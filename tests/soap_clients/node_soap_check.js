// Checks the presenced SOAP service with node-soap, over both WSDL ports (SOAP 1.1 and 1.2).
//
// Usage: node node_soap_check.js HTTP_PORT   (run by run.sh, which starts the server and pushes
// the data)
//
// node-soap keeps xs:unsignedLong as a string (exact); the SOAP 1.2 client also maps it to BigInt
// with a customDeserializer, the way an application that computes with ids would.
// Prints one "ok NAME" or "FAIL NAME: detail" line per check; exits 1 if any check failed.

'use strict';

const soap = require('soap');

const U64_MAX = '18446744073709551615';
let failed = 0;

function check(name, cond, detail) {
  if (cond) {
    console.log(`ok node-soap ${name}`);
  } else {
    failed += 1;
    console.log(`FAIL node-soap ${name}: ${JSON.stringify(detail)}`);
  }
}

function list(x) {
  if (x === undefined || x === null || x === '') return [];
  return Array.isArray(x) ? x : [x];
}

function call(method, args) {
  return new Promise((resolve, reject) => {
    method(args, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

async function checkPort(url, portName, v12) {
  const tag = v12 ? '12' : '11';
  // node-soap caches parsed WSDLs by URL together with the options of the first client:
  // disableCache lets each client keep its own.
  const options = v12
    ? {
        disableCache: true,
        forceSoap12Headers: true,
        customDeserializer: { unsignedLong: (text) => BigInt(text) },
      }
    : { disableCache: true };
  const client = await soap.createClientAsync(url, options);
  const op = client.PresenceService[portName].GetPresence;
  const sent = ['10086', U64_MAX, '42', '10010'];
  const res = await call(op, { ids: { id: sent } });
  const st = list(res && res.statuses && res.statuses.status);
  check(`${tag} count`, st.length === 4, res);
  if (st.length !== 4) return;
  const [alice, maxed, unknown, gone] = st;
  const ids = st.map((s) => s.id);
  const want = v12 ? sent.map((s) => BigInt(s)) : sent;
  check(`${tag} u64 ids round-trip exactly`, ids.every((id, i) => id === want[i]), ids.map(String));
  check(`${tag} booleans`, alice.known === true && alice.online === true && alice.acceptsStrangers === true, alice);
  check(`${tag} client enum values`, JSON.stringify(list(alice.clients.client)) === '["PC","Mobile"]', alice.clients);
  check(
    `${tag} lastChange is a date`,
    alice.lastChange instanceof Date && !Number.isNaN(alice.lastChange.getTime()),
    alice.lastChange,
  );
  const entries = list(alice.extensions && alice.extensions.entry);
  check(`${tag} extensions`, entries.length === 1 && entries[0].key === 'nick' && entries[0].value === 'alice', entries);
  check(`${tag} id 2^64-1 known on web`, maxed.known === true && JSON.stringify(list(maxed.clients.client)) === '["Web"]', String(maxed.id));
  check(
    `${tag} unknown id has no lastChange`,
    unknown.known === false && unknown.online === false && !('lastChange' in unknown) && !('extensions' in unknown),
    Object.keys(unknown),
  );
  check(
    `${tag} logged-out user stays known with lastChange`,
    gone.known === true && gone.online === false && gone.acceptsStrangers === false && gone.lastChange instanceof Date,
    Object.keys(gone),
  );
  try {
    await call(op, { ids: { id: ['0'] } });
    check(`${tag} fault for id 0`, false, 'no fault');
  } catch (err) {
    const fault = err && err.root && err.root.Envelope && err.root.Envelope.Body && err.root.Envelope.Body.Fault;
    const detail = fault && (v12 ? fault.Detail : fault.detail);
    const pf = detail && detail.PresenceFault;
    check(
      `${tag} typed fault InvalidId for id 0`,
      pf && pf.code === 'InvalidId' && pf.badValue === '0' && typeof pf.message === 'string',
      fault || String(err),
    );
    const code = fault && (v12 ? fault.Code && fault.Code.Value : fault.faultcode);
    const wantCode = v12 ? 'Sender' : 'Client';
    check(`${tag} fault code is ${wantCode}`, typeof code === 'string' && code.endsWith(wantCode), code);
  }
}

async function main() {
  const port = process.argv[2];
  const url = `http://127.0.0.1:${port}/soap?wsdl`;
  await checkPort(url, 'PresenceSoap11', false);
  await checkPort(url, 'PresenceSoap12', true);
}

main().then(
  () => process.exit(failed ? 1 : 0),
  (err) => {
    console.log(`FAIL node-soap crashed: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  },
);
