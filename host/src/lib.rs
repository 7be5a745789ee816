//! The CDNet host: trains the full CDNet with burn (CPU or CUDA), evaluates it, and exports the
//! inference path as an ONNX model bundle for the edge.
