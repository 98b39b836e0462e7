// The official Dapr JS SDK publishing through natrium's gateway.
// Env: DAPR_HTTP_PORT, PUBSUB. Publishes to topic "js-orders" and prints one JSON object of what
// the SDK returned; the Python test checks what subscribers received.
// The SDK's pubsub.publish never throws: a failure comes back as {error}.

import { CommunicationProtocolEnum, DaprClient, LogLevel } from "@dapr/dapr";

const port = process.env.DAPR_HTTP_PORT;
const pubsub = process.env.PUBSUB;
const quiet = () => {};
const client = new DaprClient({
  daprHost: "127.0.0.1",
  daprPort: port,
  communicationProtocol: CommunicationProtocolEnum.HTTP,
  logger: { level: LogLevel.Error, service: { error: quiet, warn: quiet, info: quiet, verbose: quiet, debug: quiet } },
});

await client.start();
const results = {
  object: await client.pubsub.publish(pubsub, "js-orders", { item: "book", qty: 2 }),
  text: await client.pubsub.publish(pubsub, "js-orders", "plain words"),
  withTtl: await client.pubsub.publish(pubsub, "js-orders", { ttl: true }, { metadata: { ttlInSeconds: "60" } }),
  bulk: await client.pubsub.publishBulk(pubsub, "js-orders", [{ n: 1 }, { n: 2 }]),
  unknown: await client.pubsub.publish("no-such-pubsub", "js-orders", { x: 1 }),
};
const describe = (r) => (r && r.error ? { error: String(r.error.message ?? r.error) } : r);
process.stdout.write(JSON.stringify(Object.fromEntries(Object.entries(results).map(([k, v]) => [k, describe(v)]))) + "\n");
await client.stop();
