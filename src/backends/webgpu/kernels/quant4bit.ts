// WebGPU kernels: quant4bit (being written).
export {};
