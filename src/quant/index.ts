export * from './codes4bit.js';
export * from './dynamic-map.js';
export * from './blockwise8bit.js';
export * from './quantize4bit.js';
export * from './upload.js';
