// The official, unmodified Dapr JS SDK (@dapr/dapr) calling actors through natrium's HTTP gateway:
// ActorProxyBuilder calls on a `Counter` hosted by a Python SDK app, and the reminder wire the JS
// actor runtime uses (POST, `5m`-style durations, plain JSON data).
//
// Env: DAPR_HTTP_PORT (a gateway's port) and ACTOR_ID. Prints one JSON object of results on stdout.

import { ActorId, ActorProxyBuilder, CommunicationProtocolEnum, DaprClient, LogLevel, Temporal } from "@dapr/dapr";

const port = process.env.DAPR_HTTP_PORT;
const actorId = process.env.ACTOR_ID;
if (!port || !actorId) {
  process.stderr.write("actors.mjs: set DAPR_HTTP_PORT and ACTOR_ID\n");
  process.exit(2);
}

const toStderr = (level) => (...args) => process.stderr.write(`[dapr-sdk ${level}] ${args.join(" ")}\n`);
const client = new DaprClient({
  daprHost: "127.0.0.1",
  daprPort: port,
  communicationProtocol: CommunicationProtocolEnum.HTTP,
  logger: {
    level: LogLevel.Warning,
    service: {
      error: toStderr("error"),
      warn: toStderr("warn"),
      info: toStderr("info"),
      verbose: toStderr("verbose"),
      debug: toStderr("debug"),
    },
  },
});

// The proxy sends calls to the actor type named like the class.
class Counter {}

const results = {};
const builder = new ActorProxyBuilder(Counter, client);
const counter = builder.build(new ActorId(actorId));
results.addAll = await counter.AddAll(2, 3);
results.get = await counter.Get();

const actors = builder.actorClient.actor;
const id = new ActorId(actorId);
await actors.registerActorReminder("Counter", id, "js-reminder", {
  dueTime: Temporal.Duration.from({ minutes: 5 }),
  period: Temporal.Duration.from({ seconds: 10 }),
  data: { hello: "js", n: [1, 2] },
});
results.reminder = await actors.reminderGet("Counter", id, "js-reminder");
await actors.unregisterActorReminder("Counter", id, "js-reminder");
try {
  await actors.reminderGet("Counter", id, "js-reminder");
  results.reminderAfterDelete = "still there";
} catch (error) {
  results.reminderAfterDelete = JSON.parse(error.message);
}
process.stdout.write(JSON.stringify(results) + "\n");
