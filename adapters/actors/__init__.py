"""Virtual actors on NATS, without a placement service or a scheduler.

How the pieces fit (one bus, no extra processes):

- A *host* is any process that hosts actor types: the app channel of `natrium run` for an HTTP
  app (it reads the app's `GET /dapr/config`), or a bus-native Python app (adapters/sdk). The
  host talks to the app through the `ActorApp` protocol (adapters/actors/app.py).
- *Placement* lives in a KV bucket. Each host keeps a liveness key with a per-key TTL that it
  renews; an activation record `<type>/<id> -> host` is claimed with compare-and-set. A record
  whose host key is gone may be taken over (CAS on its revision), so at most one host serves an
  actor id at any time; a host that cannot renew its lease stops serving before the lease lapses.
- *Callers* (gateway, app channel API, SDK proxies) send the call straight to the owner's host
  subject: one hop. The owner comes from their cache, else from rendezvous hashing over the live
  hosts of the type (a KV watch on the leases); a host that is not the owner answers "moved" with
  the owner its KV record names, and the chosen host of a new actor claims it.
- *Turns*: a host runs one call at a time per actor; a call carrying the reentrancy id of the
  turn in progress enters it (up to a maximum stack depth) when the app enables reentrancy.
- *State* is a KV bucket written with atomic batches; *reminders* are JetStream message
  schedules fired by the server and consumed by the actors service, which invokes the actor on
  whichever host owns it then; *timers* are tasks of the activation and die with it.
"""
