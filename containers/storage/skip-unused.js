// Preloaded into Azurite (node --require): stands in for the packages Azurite imports at start
// but never uses as we run it, so that it answers sooner after its container starts.
//
// Azurite 3.35 imports, whatever its options, the Application Insights SDK with OpenTelemetry
// (its telemetry, which drill-storage-start turns off with --disableTelemetry) and Sequelize
// (its SQL metadata store, used only when AZURITE_DB names a database; we use the default
// LokiJS store). Loading them is about half of the 1,376 modules Azurite loads and half of its
// start-up time (about 0.6 s of Node start-up before, 0.3 s after, on an idle machine).
//
// Each stand-in allows the property reads Azurite's module bodies make on import, and throws if
// anything calls or constructs it: an unexpected use fails loudly instead of misbehaving.
"use strict";
const Module = require("module");

const SKIPPED = [
  /^applicationinsights$/,
  /^@opentelemetry\//,
  /^@azure\/opentelemetry-instrumentation-azure-sdk$/,
  /^diagnostic-channel/,
];
if (!process.env.AZURITE_DB) SKIPPED.push(/^sequelize$/);

function standIn(name) {
  const fail = (what) => () => {
    throw new Error(`${name} is not loaded in this Azurite (drill skips it at start): ${what}`);
  };
  const proxy = new Proxy(function () {}, {
    get(_target, key) {
      if (key === "prototype") return {};
      if (key === "__esModule") return false;
      if (key === "then" || typeof key === "symbol") return undefined;
      return proxy;
    },
    apply: fail("called"),
    construct: fail("constructed"),
  });
  return proxy;
}

const load = Module._load;
Module._load = function (request, parent, isMain) {
  if (SKIPPED.some((re) => re.test(request))) return standIn(request);
  return load.call(this, request, parent, isMain);
};
