// Loaded with `node --import` into the conformance suite's client: adds the
// agent's bearer token to every HTTP request it makes, as an OAuth-aware MCP
// client does once it holds a token. The suite itself has no option for that.
//
//   PALISADE_CONFORMANCE_TOKEN  the token (nothing is added when unset)
//   PALISADE_CONFORMANCE_DIR    where the suite is installed (to load its undici)
import { createRequire } from "node:module";

const token = process.env.PALISADE_CONFORMANCE_TOKEN;
if (token) {
  const value = `Bearer ${token}`;

  // The MCP SDK transport uses the global fetch.
  const originalFetch = globalThis.fetch;
  globalThis.fetch = (input, init = {}) => {
    const base = init.headers ?? (input instanceof Request ? input.headers : undefined);
    const headers = new Headers(base);
    headers.set("authorization", value);
    return originalFetch(input, { ...init, headers });
  };

  // Some scenarios call undici.request directly; it goes through undici's
  // global dispatcher, which we wrap with an interceptor adding the header.
  const require = createRequire(`${process.env.PALISADE_CONFORMANCE_DIR}/node_modules/`);
  const undici = require("undici");
  const addAuth = (headers) => {
    if (Array.isArray(headers)) {
      const out = [];
      for (let i = 0; i < headers.length; i += 2) {
        if (String(headers[i]).toLowerCase() !== "authorization") out.push(headers[i], headers[i + 1]);
      }
      return [...out, "authorization", value];
    }
    const out = {};
    for (const [k, v] of Object.entries(headers ?? {})) {
      if (k.toLowerCase() !== "authorization") out[k] = v;
    }
    out.authorization = value;
    return out;
  };
  const agent = new undici.Agent().compose(
    (dispatch) => (opts, handler) => dispatch({ ...opts, headers: addAuth(opts.headers) }, handler),
  );
  // Node's built-in fetch shares this global dispatcher slot and works with it too.
  undici.setGlobalDispatcher(agent);
}
