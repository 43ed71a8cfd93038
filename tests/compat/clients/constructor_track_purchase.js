// Constructor's own Node client (@constructor-io/constructorio-node) sending a purchase,
// unchanged but for the host: the client always builds https:// URLs, so the fetch it is
// given sends the very same request over plain http to the test server.
// Usage: node constructor_track_purchase.js <base url> <api key> <secret token> <json args>
const ConstructorIO = require('@constructor-io/constructorio-node');

const [base, apiKey, securityToken, rawArgs] = process.argv.slice(2);
const args = JSON.parse(rawArgs);
const host = new URL(base).host;

const client = new ConstructorIO({
  apiKey,
  securityToken,
  serviceUrl: `https://${host}`,
  fetch: (url, init) => fetch(url.replace(`https://${host}`, base), init),
});

client.tracker.on('success', () => process.exit(0));
client.tracker.on('error', (error) => {
  console.error(JSON.stringify(error));
  process.exit(1);
});
const sent = client.tracker.trackPurchase(args.parameters, args.userParameters);
if (sent !== true) {
  console.error(String(sent));
  process.exit(2);
}
setTimeout(() => { console.error('no answer'); process.exit(3); }, 20000);
