// MQTT.js (npm "mqtt") over WebSockets: subscribe, publish to the same topic, print what came back.
// Usage: node mqttjs_roundtrip.js URL USERNAME PASSWORD TOPIC ; also evaluated in Chromium (tests/broker/test_websocket.py).
function roundtrip(mqtt, url, username, password, topic) {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { username, password, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 10000 });
    client.on("error", (err) => { client.end(true); reject(String(err)); });
    client.on("connect", () => {
      client.subscribe(topic, { qos: 1 }, (err, granted) => {
        if (err) { client.end(true); reject(String(err)); return; }
        client.publish(topic, "from-mqttjs", { qos: 1 });
      });
    });
    client.on("message", (received, payload, packet) => {
      client.end();
      resolve(`${received} ${payload.toString()} ${packet.qos}`);
    });
  });
}

if (typeof module !== "undefined" && require.main === module) {
  const [url, username, password, topic] = process.argv.slice(2);
  roundtrip(require("mqtt"), url, username, password, topic).then(
    (line) => { console.log(line); process.exit(0); },
    (err) => { console.error(err); process.exit(1); },
  );
}
