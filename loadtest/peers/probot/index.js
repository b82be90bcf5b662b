// The benchmark's peer: a minimal Probot app that receives GitHub webhooks on loopback.
//
// It verifies each delivery's X-Hub-Signature-256 (Probot's own middleware does, with the
// same secret Switchyard uses), hands the event to a handler that does nothing, and persists
// nothing: what a team would otherwise run to receive GitHub webhooks.
//
// Environment: PORT (default 3000), WEBHOOK_SECRET, APP_ID, PRIVATE_KEY_PATH (a throwaway RSA
// key; Probot needs one to start, and never calls GitHub here), LOG_LEVEL (default warn).

import { createServer } from "node:http";
import { createNodeMiddleware, createProbot } from "probot";

const port = Number(process.env.PORT || 3000);
const host = "127.0.0.1";

/** @param {import("probot").Probot} app */
const appFn = (app) => {
  app.onAny(async () => {});
};

const probot = createProbot();
const middleware = await createNodeMiddleware(appFn, {
  probot,
  webhooksPath: "/api/github/webhooks",
});

const server = createServer((req, res) => {
  middleware(req, res, () => {
    res.writeHead(404).end();
  });
});
server.listen(port, host, () => {
  process.stderr.write(`probot peer listening on http://${host}:${port}/api/github/webhooks\n`);
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
