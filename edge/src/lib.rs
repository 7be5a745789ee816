//! The CDNet edge runtime: receives probe frames over a serial link, runs the exported model with
//! tract, and shows the diagnosis and lesion heatmap on the board's screen.
