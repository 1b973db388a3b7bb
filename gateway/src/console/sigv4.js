"use strict";
// AWS Signature Version 4 for the console's EC2 calls, with WebCrypto: the
// same canonical request botocore and the `cairn` CLI build for a
// form-encoded POST (signed headers content-type;host;x-amz-date, the
// body's SHA-256).

const sigv4 = (() => {
  const enc = new TextEncoder();
  const hex = (buf) =>
    Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
  const sha256Hex = async (text) => hex(await crypto.subtle.digest("SHA-256", enc.encode(text)));
  const hmac = async (key, text) => {
    const raw = typeof key === "string" ? enc.encode(key) : key;
    const k = await crypto.subtle.importKey(
      "raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return crypto.subtle.sign("HMAC", k, enc.encode(text));
  };

  // The headers to send with `body` (a form-encoded EC2 Query string).
  async function signEc2(body, { accessKey, secretKey, region, host, now }) {
    const amzDate = now.toISOString().replace(/[-:]/g, "").replace(/\.\d+/, "");
    const day = amzDate.slice(0, 8);
    const contentType = "application/x-www-form-urlencoded; charset=utf-8";
    const signed = "content-type;host;x-amz-date";
    const canonical = [
      "POST", "/", "",
      `content-type:${contentType}`, `host:${host}`, `x-amz-date:${amzDate}`, "",
      signed, await sha256Hex(body),
    ].join("\n");
    const scope = `${day}/${region}/ec2/aws4_request`;
    const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, await sha256Hex(canonical)].join("\n");
    let key = await hmac("AWS4" + secretKey, day);
    for (const part of [region, "ec2", "aws4_request"]) key = await hmac(key, part);
    const signature = hex(await hmac(key, toSign));
    return {
      "Content-Type": contentType,
      "X-Amz-Date": amzDate,
      Authorization:
        `AWS4-HMAC-SHA256 Credential=${accessKey}/${scope}, ` +
        `SignedHeaders=${signed}, Signature=${signature}`,
    };
  }

  return { signEc2 };
})();
