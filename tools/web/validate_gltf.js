// Validate a .glb/.gltf with the Khronos glTF Validator; prints the report's JSON (issues summary + messages).
// usage: node tools/web/validate_gltf.js FILE
const fs = require("fs");
const path = require("path");
const validator = require("gltf-validator");

const file = process.argv[2];
const data = new Uint8Array(fs.readFileSync(file));
validator.validateBytes(data, {
  uri: path.basename(file),
  externalResourceFunction: (uri) => Promise.reject(new Error(`external resource ${uri} not allowed`)),
}).then((report) => {
  process.stdout.write(JSON.stringify(report));
}).catch((err) => {
  process.stderr.write(String(err));
  process.exit(2);
});
