/** What the tests share: the server they run against, and a job endpoint served by this process. */

import { once } from "node:events";
import { type IncomingHttpHeaders, type Server, createServer } from "node:http";
import type { AddressInfo } from "node:net";

/** The server and keys, from the environment (tests/integration/test_typescript_client.py sets them). */
export function serverFromEnv(): { address: string; apiKey: string; adminKey: string } {
  const names = ["STRAIT_ADDRESS", "STRAIT_API_KEY", "STRAIT_ADMIN_KEY"];
  const missing = names.filter((name) => !process.env[name]);
  if (missing.length > 0) {
    throw new Error(
      `set ${missing.join(", ")} to a running Strait server and its keys ` +
        "(python -m pytest tests/integration/test_typescript_client.py starts one and runs these tests)",
    );
  }
  return {
    address: process.env["STRAIT_ADDRESS"]!,
    apiKey: process.env["STRAIT_API_KEY"]!,
    adminKey: process.env["STRAIT_ADMIN_KEY"]!,
  };
}

export interface Delivery {
  path: string;
  headers: IncomingHttpHeaders;
  body: unknown;
}

/** An HTTP job endpoint: answers every POST with 200 and `{"echo": <payload>}`, and keeps what it got. */
export class EchoEndpoint {
  readonly deliveries: Delivery[] = [];
  private constructor(private readonly server: Server) {}

  static async start(): Promise<EchoEndpoint> {
    const server = createServer();
    const endpoint = new EchoEndpoint(server);
    server.on("request", (request, response) => {
      const chunks: Buffer[] = [];
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("end", () => {
        const body: unknown = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}");
        endpoint.deliveries.push({ path: request.url ?? "", headers: request.headers, body });
        const answer = JSON.stringify({ echo: body });
        response.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(answer) });
        response.end(answer);
      });
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    return endpoint;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    this.server.close();
    await once(this.server, "close");
  }
}

/** A slug no other test run has used. */
export function uniqueSlug(prefix: string): string {
  return `${prefix}-${Math.random().toString(36).slice(2, 10)}`;
}
