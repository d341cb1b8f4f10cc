"""cffi build script (ABI mode, out of line) for the Winsock declarations:
``anyio_iocp._engines.iocp._winsock_cffi``.

ABI mode compiles nothing: ``compile()`` writes a pure Python module that
holds the parsed declarations, and the functions are found at run time with
``ffi.dlopen("ws2_32")`` / ``ffi.dlopen("kernel32")``.  Installing on Windows
therefore needs no C compiler.  ``setup.py`` generates the module on every
platform (it is only ever loaded on Windows); ``python
_cffi_build/build_winsock.py DIR`` writes it under ``DIR/anyio_iocp/``.

Only fixed-size integer types are used, so that the layout is the same
whatever ``long`` is on the platform that generates the module.
"""

import sys

from cffi import FFI

CDEF = """
typedef uint32_t DWORD;
typedef int BOOL;
typedef uintptr_t ULONG_PTR;
typedef uintptr_t SOCKET;
typedef void *HANDLE;

typedef struct _OVERLAPPED {
    ULONG_PTR Internal;      /* NTSTATUS of the completed operation */
    ULONG_PTR InternalHigh;  /* bytes transferred */
    union {
        struct {
            DWORD Offset;
            DWORD OffsetHigh;
        } s;
        void *Pointer;
    } u;
    HANDLE hEvent;
} OVERLAPPED;

typedef struct _WSABUF {
    uint32_t len;
    char *buf;
} WSABUF;

typedef struct _GUID {
    uint32_t Data1;
    uint16_t Data2;
    uint16_t Data3;
    uint8_t Data4[8];
} GUID;

/* ws2_32 */
SOCKET WSASocketW(int af, int type, int protocol, void *lpProtocolInfo,
                  uint32_t g, DWORD dwFlags);
int WSAIoctl(SOCKET s, DWORD dwIoControlCode, void *lpvInBuffer, DWORD cbInBuffer,
             void *lpvOutBuffer, DWORD cbOutBuffer, DWORD *lpcbBytesReturned,
             OVERLAPPED *lpOverlapped, void *lpCompletionRoutine);
int WSARecv(SOCKET s, WSABUF *lpBuffers, DWORD dwBufferCount,
            DWORD *lpNumberOfBytesRecvd, DWORD *lpFlags, OVERLAPPED *lpOverlapped,
            void *lpCompletionRoutine);
int WSASend(SOCKET s, WSABUF *lpBuffers, DWORD dwBufferCount,
            DWORD *lpNumberOfBytesSent, DWORD dwFlags, OVERLAPPED *lpOverlapped,
            void *lpCompletionRoutine);
int WSARecvFrom(SOCKET s, WSABUF *lpBuffers, DWORD dwBufferCount,
                DWORD *lpNumberOfBytesRecvd, DWORD *lpFlags, void *lpFrom, int *lpFromlen,
                OVERLAPPED *lpOverlapped, void *lpCompletionRoutine);
int WSASendTo(SOCKET s, WSABUF *lpBuffers, DWORD dwBufferCount,
              DWORD *lpNumberOfBytesSent, DWORD dwFlags, const void *lpTo, int iTolen,
              OVERLAPPED *lpOverlapped, void *lpCompletionRoutine);
BOOL WSAGetOverlappedResult(SOCKET s, OVERLAPPED *lpOverlapped, DWORD *lpcbTransfer,
                            BOOL fWait, DWORD *lpdwFlags);
int WSAGetLastError(void);
int setsockopt(SOCKET s, int level, int optname, const char *optval, int optlen);
int closesocket(SOCKET s);

/* Microsoft extension functions, found with SIO_GET_EXTENSION_FUNCTION_POINTER */
typedef BOOL (*LPFN_ACCEPTEX)(SOCKET sListenSocket, SOCKET sAcceptSocket,
                              void *lpOutputBuffer, DWORD dwReceiveDataLength,
                              DWORD dwLocalAddressLength, DWORD dwRemoteAddressLength,
                              DWORD *lpdwBytesReceived, OVERLAPPED *lpOverlapped);
typedef void (*LPFN_GETACCEPTEXSOCKADDRS)(void *lpOutputBuffer, DWORD dwReceiveDataLength,
                                          DWORD dwLocalAddressLength,
                                          DWORD dwRemoteAddressLength,
                                          void **LocalSockaddr, int *LocalSockaddrLength,
                                          void **RemoteSockaddr, int *RemoteSockaddrLength);

/* kernel32 */
HANDLE CreateIoCompletionPort(HANDLE FileHandle, HANDLE ExistingCompletionPort,
                              ULONG_PTR CompletionKey, DWORD NumberOfConcurrentThreads);
BOOL CancelIoEx(HANDLE hFile, OVERLAPPED *lpOverlapped);
BOOL SetFileCompletionNotificationModes(HANDLE FileHandle, uint8_t Flags);
DWORD GetLastError(void);

#define SOCKET_ERROR -1
#define SOL_SOCKET 0xffff
#define SO_UPDATE_ACCEPT_CONTEXT 0x700B
#define SIO_GET_EXTENSION_FUNCTION_POINTER 0xC8000006
#define SIO_UDP_CONNRESET 0x9800000C
#define WSA_FLAG_OVERLAPPED 0x01
#define WSA_FLAG_NO_HANDLE_INHERIT 0x80
#define FILE_SKIP_COMPLETION_PORT_ON_SUCCESS 0x1
#define FILE_SKIP_SET_EVENT_ON_HANDLE 0x2

#define ERROR_NETNAME_DELETED 64
#define ERROR_INVALID_PARAMETER 87
#define ERROR_OPERATION_ABORTED 995
#define ERROR_IO_PENDING 997
#define ERROR_NOT_FOUND 1168
#define ERROR_CONNECTION_REFUSED 1225
#define ERROR_PORT_UNREACHABLE 1234
#define ERROR_CONNECTION_ABORTED 1236
#define WSA_IO_PENDING 997
#define WSA_OPERATION_ABORTED 995
#define WSAEINVAL 10022
#define WSAEWOULDBLOCK 10035
#define WSAENOTSOCK 10038
#define WSAEMSGSIZE 10040
#define WSAECONNABORTED 10053
#define WSAECONNRESET 10054
#define WSAENOTCONN 10057
#define WSAESHUTDOWN 10058
#define WSAECONNREFUSED 10061
#define STATUS_CANCELLED 0xC0000120
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source("anyio_iocp._engines.iocp._winsock_cffi", None)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=sys.argv[1] if len(sys.argv) > 1 else ".", verbose=False)
