// Imported first by a test file that runs another's tests over the JavaScript data path: the
// server reads KINDLING_NBD_NATIVE whenever a connection reaches transmission.
process.env.KINDLING_NBD_NATIVE = "off";
