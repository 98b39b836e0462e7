// The official, unmodified Dapr JS SDK (@dapr/dapr, pinned in package.json) against natrium's
// HTTP gateway: the state API end to end.
//
// Env: DAPR_HTTP_PORT (the gateway's port) and STORE (a state store the gateway can reach).
// Prints one JSON object of results on stdout; exits 0 when every check passed, otherwise 1 with
// the failed checks on stderr. SDK log lines go to stderr so stdout stays one JSON document.
//
// Things the SDK does that these checks rely on (read from its source, 3.18.0):
// - the first call on the client (or client.start()) polls GET /v1.0/metadata until a 2xx
//   with a non-empty body;
// - state.get returns the parsed body, "" for a 204, and drops the ETag header, so etags are
//   read through getBulk;
// - state.save and state.delete never throw: a failed request comes back as {error: Error}
//   whose message is JSON {error: statusText, error_msg: <raw body>, status};
// - state.transaction does throw, with the same kind of Error.

import { CommunicationProtocolEnum, DaprClient, LogLevel } from "@dapr/dapr";
import { isDeepStrictEqual } from "node:util";

const port = process.env.DAPR_HTTP_PORT;
const store = process.env.STORE;
if (!port || !store) {
  process.stderr.write("state.mjs: set DAPR_HTTP_PORT and STORE\n");
  process.exit(2);
}

const toStderr = (level) => (...args) => process.stderr.write(`[dapr-sdk ${level}] ${args.join(" ")}\n`);
const client = new DaprClient({
  daprHost: "127.0.0.1",
  daprPort: port,
  communicationProtocol: CommunicationProtocolEnum.HTTP,
  logger: {
    level: LogLevel.Info,
    service: {
      error: toStderr("error"),
      warn: toStderr("warn"),
      info: toStderr("info"),
      verbose: toStderr("verbose"),
      debug: toStderr("debug"),
    },
  },
});

const results = {};
const failures = [];

function check(name, ok, detail) {
  results[name] = { ok: !!ok, ...(detail === undefined ? {} : { detail }) };
  if (!ok) failures.push(`${name}: ${JSON.stringify(detail)}`);
}

function expectEqual(name, actual, expected) {
  check(name, isDeepStrictEqual(actual, expected), { actual: actual ?? null, expected });
}

// The SDK's error: Error(JSON.stringify({error, error_msg, status})); error_msg is daprd's JSON body.
function describeError(err) {
  if (!(err instanceof Error)) return { raw: String(err) };
  try {
    const outer = JSON.parse(err.message);
    let body = outer.error_msg;
    try {
      body = JSON.parse(outer.error_msg);
    } catch {
      // not JSON: keep the raw text
    }
    return { status: outer.status, statusText: outer.error, body };
  } catch {
    return { raw: err.message };
  }
}

async function etagOf(key) {
  const [item] = await client.state.getBulk(store, [key]);
  return item?.etag;
}

async function main() {
  // Startup handshake: GET /v1.0/metadata until it answers with a body.
  await client.start();
  check("start", client.getIsInitialized(), { initialized: client.getIsInitialized() });

  // Metadata lists the store among the components.
  const metadata = await client.metadata.get();
  const component = (metadata?.components ?? []).find((c) => c.name === store);
  check("metadata_lists_store", !!component, { components: metadata?.components ?? null });
  results.metadata_component = component ?? null;

  // Save several items in one call; the SDK returns {} on success.
  const saved = await client.state.save(store, [
    { key: "order-1", value: { qty: 3, item: "book" } },
    { key: "greeting", value: "hello" },
    { key: "count", value: 42 },
    { key: "flags", value: [true, false, null] },
  ]);
  expectEqual("save", saved, {});

  // Get returns the parsed value; a missing key returns "".
  expectEqual("get_object", await client.state.get(store, "order-1"), { qty: 3, item: "book" });
  expectEqual("get_string", await client.state.get(store, "greeting"), "hello");
  expectEqual("get_number", await client.state.get(store, "count"), 42);
  expectEqual("get_array", await client.state.get(store, "flags"), [true, false, null]);
  expectEqual("get_missing", await client.state.get(store, "no-such-key"), "");

  // Bulk get: [{key, data, etag}] in request order; a missing key has no data.
  const bulk = await client.state.getBulk(store, ["order-1", "greeting", "no-such-key"]);
  results.bulk = bulk;
  check("bulk_is_array_of_3", Array.isArray(bulk) && bulk.length === 3, { bulk });
  if (Array.isArray(bulk) && bulk.length === 3) {
    expectEqual(
      "bulk_keys_in_order",
      bulk.map((i) => i.key),
      ["order-1", "greeting", "no-such-key"],
    );
    expectEqual("bulk_data_object", bulk[0].data, { qty: 3, item: "book" });
    expectEqual("bulk_data_string", bulk[1].data, "hello");
    check("bulk_etags_are_strings", typeof bulk[0].etag === "string" && bulk[0].etag !== "" && typeof bulk[1].etag === "string", {
      etags: bulk.map((i) => i.etag ?? null),
    });
    check("bulk_missing_has_no_data", bulk[2].data === undefined || bulk[2].data === null || bulk[2].data === "", {
      item: bulk[2],
    });
  }

  // Optimistic concurrency on save: the current etag wins once, then it is stale.
  const etag1 = await etagOf("order-1");
  const fresh = await client.state.save(store, [{ key: "order-1", value: { qty: 4 }, etag: etag1 }]);
  expectEqual("save_with_current_etag", fresh, {});
  const etag2 = await etagOf("order-1");
  check("etag_changes_on_write", typeof etag2 === "string" && etag2 !== etag1, { etag1, etag2 });
  const stale = await client.state.save(store, [{ key: "order-1", value: { qty: 99 }, etag: etag1 }]);
  const staleError = stale?.error ? describeError(stale.error) : null;
  results.stale_save_error = staleError;
  check("save_with_stale_etag_returns_error", !!stale?.error, { returned: staleError ?? stale });
  check(
    "save_with_stale_etag_is_409_ERR_STATE_SAVE",
    staleError?.status === 409 && staleError?.body?.errorCode === "ERR_STATE_SAVE",
    staleError,
  );
  expectEqual("stale_save_left_value_alone", await client.state.get(store, "order-1"), { qty: 4 });

  // Delete: a stale etag is refused (409), the current one deletes, a plain delete deletes.
  const staleDelete = await client.state.delete(store, "order-1", { etag: etag1 });
  const staleDeleteError = staleDelete?.error ? describeError(staleDelete.error) : null;
  results.stale_delete_error = staleDeleteError;
  check(
    "delete_with_stale_etag_is_409_ERR_STATE_DELETE",
    staleDeleteError?.status === 409 && staleDeleteError?.body?.errorCode === "ERR_STATE_DELETE",
    { returned: staleDeleteError },
  );
  expectEqual("stale_delete_kept_value", await client.state.get(store, "order-1"), { qty: 4 });
  expectEqual("delete_with_current_etag", await client.state.delete(store, "order-1", { etag: etag2 }), {});
  expectEqual("deleted_with_etag_is_gone", await client.state.get(store, "order-1"), "");
  expectEqual("delete", await client.state.delete(store, "count"), {});
  expectEqual("deleted_is_gone", await client.state.get(store, "count"), "");
  expectEqual("delete_missing_is_fine", await client.state.delete(store, "never-existed"), {});

  // Transaction: upsert + delete in one call; resolves to undefined.
  const tx = await client.state.transaction(store, [
    { operation: "upsert", request: { key: "tx-1", value: { a: 1 } } },
    { operation: "delete", request: { key: "greeting" } },
  ]);
  expectEqual("transaction_returns_undefined", tx === undefined ? "undefined" : tx, "undefined");
  expectEqual("transaction_upserted", await client.state.get(store, "tx-1"), { a: 1 });
  expectEqual("transaction_deleted", await client.state.get(store, "greeting"), "");

  // A transaction with a stale etag fails as a whole (daprd: 500 ERR_STATE_TRANSACTION) and throws.
  const txEtag = await etagOf("tx-1");
  await client.state.save(store, [{ key: "tx-1", value: { a: 2 } }]);
  let txError = null;
  try {
    await client.state.transaction(store, [
      { operation: "upsert", request: { key: "tx-2", value: "must not appear" } },
      { operation: "upsert", request: { key: "tx-1", value: { a: 3 }, etag: txEtag } },
    ]);
  } catch (err) {
    txError = describeError(err);
  }
  results.stale_transaction_error = txError;
  check(
    "transaction_with_stale_etag_throws_500_ERR_STATE_TRANSACTION",
    txError?.status === 500 && txError?.body?.errorCode === "ERR_STATE_TRANSACTION",
    { thrown: txError },
  );
  expectEqual("failed_transaction_wrote_nothing", await client.state.get(store, "tx-2"), "");
  expectEqual("failed_transaction_kept_value", await client.state.get(store, "tx-1"), { a: 2 });
}

let exitCode = 0;
try {
  await main();
} catch (err) {
  failures.push(`unexpected exception: ${err?.stack ?? err}`);
  results.exception = err instanceof Error ? describeError(err) : String(err);
}
try {
  await client.stop();
} catch {
  // closing pooled connections is best effort
}
results.failures = failures;
process.stdout.write(JSON.stringify(results) + "\n");
if (failures.length) {
  process.stderr.write(`state.mjs: ${failures.length} check(s) failed:\n${failures.join("\n")}\n`);
  exitCode = 1;
}
process.exit(exitCode);
