// The NBD protocol scenarios of nbd-protocol.test.ts again, every connection served by the
// JavaScript transmission: the path of devices without a native target (object storage; rbd
// where librbd cannot be loaded), of TLS and QoS-limited exports, and of any export where the
// native module is not built.
import "./helpers/javascript-nbd";
import "./nbd-protocol.test";
