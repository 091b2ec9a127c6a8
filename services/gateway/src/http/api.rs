//! What every list handler shares.

use promptops_platform::errors::ServiceError;
use promptops_proto::common::v1::PageRequest;

use super::model::bad_request;

pub fn page(page_size: Option<u32>, page_token: Option<String>) -> Result<PageRequest, ServiceError> {
    if page_size == Some(0) || page_size.is_some_and(|n| n > promptops_platform::paging::MAX_PAGE_SIZE) {
        return Err(bad_request("page_size", "must be between 1 and 200"));
    }
    Ok(PageRequest {
        page_size: page_size.unwrap_or(0),
        page_token: page_token.unwrap_or_default(),
    })
}
