// {{name}}: an Ingot processor. It logs each item and returns it unchanged; replace
// processItem with your logic. Imports: execute, query, log, getMetadata, setMetadata.
import { log } from 'ingot:processor/context@0.1.0';

export const processor = {
  validateBatch() {},
  validateItem() {},
  processItem(item) {
    const row = JSON.parse(item.data);
    log('info', `item ${item.index} has ${Object.keys(row ?? {}).length} fields`, undefined);
    return { targetTable: undefined, targetId: undefined, processedData: item.data };
  },
  onBatchStart() {},
  onBatchComplete() {},
  onItemError() {},
};
