// Type-checked in the NodeNext ES module config only: `@portcullis/client/browser` is the
// browser bundle, an ES module (no `require` condition), typed like the package's main entry.
import { PortcullisSocket, isTransientClose } from '@portcullis/client/browser'

export function open (url: string): PortcullisSocket {
  const socket = new PortcullisSocket(url)
  socket.addEventListener('open', () => socket.send(String(isTransientClose(1006))))
  return socket
}
