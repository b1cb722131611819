// danfojs-node hard-requires @tensorflow/tfjs-node, whose install downloads libtensorflow and
// fails offline. danfojs only needs the tfjs API, so it gets the project's plain @tensorflow/tfjs
// (the same instance the lib uses, so there is one tfjs engine in the process).
module.exports = require("@tensorflow/tfjs");
