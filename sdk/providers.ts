import type * as pulumi from "@pulumi/pulumi";

// The dynamic providers Pulumi serializes into state. Each method is a one-line shim that
// loads the installed implementation when it is called: nothing large or native is captured,
// and refresh or delete of old state runs today's code, not the code that wrote the state.
// `require` resolves from the Pulumi project's directory, where kindling is installed.

export const volumeProvider: pulumi.dynamic.ResourceProvider = {
  check: (olds, news) => require("kindling/pulumi").volume.check(olds, news),
  diff: (id, olds, news) => require("kindling/pulumi").volume.diff(id, olds, news),
  create: (inputs) => require("kindling/pulumi").volume.create(inputs),
  read: (id, props) => require("kindling/pulumi").volume.read(id, props),
  update: (id, olds, news) => require("kindling/pulumi").volume.update(id, olds, news),
  delete: (id, props) => require("kindling/pulumi").volume.remove(id, props),
};

export const snapshotProvider: pulumi.dynamic.ResourceProvider = {
  check: (olds, news) => require("kindling/pulumi").snapshot.check(olds, news),
  diff: (id, olds, news) => require("kindling/pulumi").snapshot.diff(id, olds, news),
  create: (inputs) => require("kindling/pulumi").snapshot.create(inputs),
  read: (id, props) => require("kindling/pulumi").snapshot.read(id, props),
  update: (id, olds, news) => require("kindling/pulumi").snapshot.update(id, olds, news),
  delete: (id, props) => require("kindling/pulumi").snapshot.remove(id, props),
};

export const attachmentProvider: pulumi.dynamic.ResourceProvider = {
  check: (olds, news) => require("kindling/pulumi").attachment.check(olds, news),
  diff: (id, olds, news) => require("kindling/pulumi").attachment.diff(id, olds, news),
  create: (inputs) => require("kindling/pulumi").attachment.create(inputs),
  read: (id, props) => require("kindling/pulumi").attachment.read(id, props),
  update: (id, olds, news) => require("kindling/pulumi").attachment.update(id, olds, news),
  delete: (id, props) => require("kindling/pulumi").attachment.remove(id, props),
};

export const imageProvider: pulumi.dynamic.ResourceProvider = {
  check: (olds, news) => require("kindling/pulumi").image.check(olds, news),
  diff: (id, olds, news) => require("kindling/pulumi").image.diff(id, olds, news),
  create: (inputs) => require("kindling/pulumi").image.create(inputs),
  read: (id, props) => require("kindling/pulumi").image.read(id, props),
  update: (id, olds, news) => require("kindling/pulumi").image.update(id, olds, news),
  delete: (id, props) => require("kindling/pulumi").image.remove(id, props),
};
