"""The OpenAI-compatible API: POST /v1/chat/completions (streamed or not) and GET /v1/models.

How it maps onto what the network already does:
- a completion request is one chat job (app/chat), in a chat session: `messages` before the last
  user turn become the session's history (a new session each time, or the one named by the
  `session_id` extension field, whose stored turns must begin the conversation), system and
  developer messages its `context`, the last user message its prompt; GET
  /chat/sessions/{id}/messages shows the whole conversation afterwards;
- `model` must be one a miner declared on its polls recently (app/leases/served.py), else 404;
  the job goes on that model's queue list, so only such miners lease it;
- sampling options go with the lease to the miner (app/chat/options.py);
- `stream: true`: the miner posts chunks on its lease (POST /job/{id}/chunk), the coordinator
  relays them through Redis (app/relay.py) to the API process holding the client's stream
  (relay.py here), and the final, signed result is checked against what was streamed.

schemas.py  the request and response bodies, in OpenAI's shapes
convert.py  messages -> (context, earlier turns, prompt); a finished job -> a completion
relay.py    follows one job's stream: deltas, the end, or why it broke
routes.py   the endpoints
errors.py   errors on /v1 in OpenAI's shape
"""
