/**
 * Errors as the OpenAI API reports them: an HTTP status and `{ error: { message, type, param, code } }`,
 * so OpenAI clients raise their usual exception classes (BadRequestError, NotFoundError, ...).
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return {
      error: { message: this.message, type: this.type, param: this.param, code: this.code },
    };
  }
}

/** 400: the request itself is wrong; `param` names the field. */
export function invalidRequest(
  message: string,
  param: string | null = null,
  code?: string,
): ApiError {
  return new ApiError(400, message, 'invalid_request_error', param, code ?? null);
}
