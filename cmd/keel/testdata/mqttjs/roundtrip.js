// Connects MQTT.js to the URL in argv[2] (ws:// or wss://; a CA file in
// argv[3] for wss), subscribes, publishes QoS 1 and prints what came back.
const fs = require('fs');
const mqtt = require('mqtt');
const [url, ca] = process.argv.slice(2);
const opts = { clientId: 'mqttjs-' + process.pid, protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 10000 };
if (ca) opts.ca = fs.readFileSync(ca);
const c = mqtt.connect(url, opts);
const fail = (e) => { console.error('mqttjs:', e && e.message || e); process.exit(1); };
setTimeout(() => fail('timed out'), 15000).unref();
c.on('error', fail);
c.on('connect', () => {
  c.subscribe('js/t', { qos: 1 }, (err) => {
    if (err) return fail(err);
    c.publish('js/t', 'hello from MQTT.js', { qos: 1 }, (err) => { if (err) fail(err); });
  });
});
c.on('message', (topic, payload) => {
  console.log(topic + ' ' + payload.toString());
  c.end(false, {}, () => process.exit(0));
});
